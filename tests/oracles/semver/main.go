// Oracle for imageauto's semver module: Masterminds/semver v3 (Debian's
// golang-github-masterminds-semver-dev) with Flux's tag parsing and
// selection loop (fluxcd/pkg/version.ParseVersion and
// image-reflector-controller internal/policy SemVer.Latest).
//
// Reads lines from standard input and answers one line each:
//
//	R<TAB>range<TAB>version   -> E (range error), N (not a version), 1 or 0
//	S<TAB>range<TAB>t1<US>t2  -> E (range error), - (no tag), or the tag
//
// where <US> is the byte 0x1f.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/Masterminds/semver"
)

func parseVersion(s string) (*semver.Version, error) {
	if _, err := semver.StrictNewVersion(strings.TrimPrefix(s, "v")); err != nil {
		return nil, err
	}
	return semver.NewVersion(s)
}

func latest(c *semver.Constraints, tags []string) string {
	var best *semver.Version
	for _, t := range tags {
		if v, err := parseVersion(t); err == nil {
			if c.Check(v) && (best == nil || v.GreaterThan(best)) {
				best = v
			}
		}
	}
	if best == nil {
		return "-"
	}
	return best.Original()
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		f := strings.SplitN(in.Text(), "\t", 3)
		if len(f) != 3 {
			fmt.Fprintln(out, "?")
			continue
		}
		c, err := semver.NewConstraint(f[1])
		if err != nil {
			fmt.Fprintln(out, "E")
			continue
		}
		switch f[0] {
		case "R":
			v, err := parseVersion(f[2])
			if err != nil {
				fmt.Fprintln(out, "N")
			} else if c.Check(v) {
				fmt.Fprintln(out, "1")
			} else {
				fmt.Fprintln(out, "0")
			}
		case "S":
			fmt.Fprintln(out, latest(c, strings.Split(f[2], "\x1f")))
		default:
			fmt.Fprintln(out, "?")
		}
	}
}
