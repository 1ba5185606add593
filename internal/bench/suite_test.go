package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestTargets checks the direction of each kind of goal and that the
// report shows every row, target and verdict.
func TestTargets(t *testing.T) {
	s, err := NewSuite(Config{Work: t.TempDir(), Runs: 3})
	if err != nil {
		t.Fatal(err)
	}
	s.add("Group A", "first", "1", "note")
	s.add("Group B", "second", "2", "")
	s.target("at most 2 s", 1.5, 2, false, "s")
	s.target("at least 1.5×", 1.2, 1.5, true, "×")
	if !s.Targets[0].Met || s.Targets[1].Met {
		t.Fatalf("targets = %+v", s.Targets)
	}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b, ThisMachine("test")); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"## Group A", "## Group B", "| first | 1 | note |", "| at most 2 s | 1.50 s | 0.75 | yes |", "| at least 1.5× | 1.20× | 0.80 | **no** |"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestDatasetsHaveDistinctFingerprints(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Datasets {
		f := d.fingerprint()
		if seen[f] {
			t.Errorf("dataset %s shares fingerprint %s", d.Name, f)
		}
		seen[f] = true
		if got, err := DatasetByName(d.Name); err != nil || got != d {
			t.Errorf("DatasetByName(%q) = %v, %v", d.Name, got, err)
		}
	}
}
