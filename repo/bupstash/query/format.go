package query

import (
	"fmt"
	"time"
)

// FormatSize writes a byte count as Bupstash does: binary units with two
// truncated decimals above 1024 bytes ("16.06MiB"), plain bytes up to and
// including 1024 ("1024B").
func FormatSize(n uint64) string {
	const (
		k = 1024
		m = k * 1024
		g = m * 1024
		t = g * 1024
		p = t * 1024
	)
	for _, u := range []struct {
		size uint64
		name string
	}{{p, "PiB"}, {t, "TiB"}, {g, "GiB"}, {m, "MiB"}, {k, "KiB"}} {
		if n > u.size {
			return fmt.Sprintf("%d.%02d%s", n/u.size, (n%u.size)/(u.size/100), u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// FormatTimestamp writes a time as Bupstash does (chrono's "%Y/%m/%d %T")
// in the given zone: "2026/11/23 04:29:51". Years outside 0–9999 carry a
// sign, as chrono writes them.
func FormatTimestamp(ts time.Time, loc *time.Location) string {
	ts = ts.In(loc)
	y := ts.Year()
	var year string
	switch {
	case y > 9999:
		year = fmt.Sprintf("+%d", y)
	case y < 0:
		year = fmt.Sprintf("-%04d", -y)
	default:
		year = fmt.Sprintf("%04d", y)
	}
	return year + ts.Format("/01/02 15:04:05")
}
