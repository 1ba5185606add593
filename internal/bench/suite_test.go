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

// TestOpCounter counts go-fuse's request lines however the log is split
// into writes, and ignores the replies and everything else.
func TestOpCounter(t *testing.T) {
	log := `time=x level=DEBUG msg="rx 2: INIT n0 {7.41 Ra 0x20000}"
time=x level=DEBUG msg="tx 2:     OK, {7.41 Ra 0x20000}"
time=x level=DEBUG msg="rx 4: LOOKUP n1 [\"repo\"] 5b"
time=x level=DEBUG msg="rx 6: READDIRPLUS n3 {Fh 1 [0 +4096)  L 0 RDONLY,0x8000}"
time=x level=INFO msg="mounted"
time=x level=DEBUG msg="rx 8: LOOKUP n1 [\"ids\"] 4b"
`
	for _, chunk := range []int{1, 7, len(log)} {
		c := &opCounter{counts: map[string]int64{}}
		for i := 0; i < len(log); i += chunk {
			c.Write([]byte(log[i:min(i+chunk, len(log))]))
		}
		if c.counts["LOOKUP"] != 2 || c.counts["INIT"] != 1 || c.counts["READDIRPLUS"] != 1 || len(c.counts) != 3 {
			t.Errorf("writes of %d bytes: counts %v", chunk, c.counts)
		}
		if got := perFile(c.counts, 2); got != "2.00" {
			t.Errorf("per file: %s", got)
		}
		if got := requestNotes(c.counts, 2); !strings.HasPrefix(got, "per file: LOOKUP 1.00, INIT 0.50, READDIRPLUS 0.50") {
			t.Errorf("notes: %s", got)
		}
	}
}
