package serve

import (
	"reflect"
	"strings"
	"testing"
)

func TestSSHCommand(t *testing.T) {
	base := []string{"ssh", "-T", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"}
	cases := []struct {
		url  string
		want []string // after base
		err  string
	}{
		{"ssh://nas/srv/repo", []string{"--", "nas", "bupstash", "serve", "/srv/repo"}, ""},
		{"ssh://backup@nas/srv/repo", []string{"-o", "User=backup", "--", "nas", "bupstash", "serve", "/srv/repo"}, ""},
		{"ssh://backup@nas:2222/srv/repo", []string{"-p", "2222", "-o", "User=backup", "--", "nas", "bupstash", "serve", "/srv/repo"}, ""},
		{"ssh://[::1]:2222/r", []string{"-p", "2222", "--", "::1", "bupstash", "serve", "/r"}, ""},
		{"ssh://[::1]/r", []string{"--", "::1", "bupstash", "serve", "/r"}, ""},
		{"ssh://nas", []string{"--", "nas", "bupstash", "serve"}, ""},
		{"ssh://nas/", []string{"--", "nas", "bupstash", "serve", "/"}, ""},
		{"ssh://nas/my repo/it's", []string{"--", "nas", "bupstash", "serve", `'/my repo/it'\''s'`}, ""},
		{"ssh://nas/$(rm -rf ~)", []string{"--", "nas", "bupstash", "serve", `'/$(rm -rf ~)'`}, ""},
		{"ssh://-oProxyCommand=evil/x", nil, "cannot start with '-'"},
		{"ssh://-@host/x", nil, "bad user"},
		{"ssh:///x", nil, "no host"},
		{"ssh://host:0/x", nil, "bad port"},
		{"ssh://host:99999/x", nil, "bad port"},
		{"ssh://host:ab/x", nil, "bad port"},
		{"ssh://ho st/x", nil, "bad host"},
		{"ssh://[::1/x", nil, "unclosed"},
		{"/local/path", nil, "not an ssh:// URL"},
	}
	for _, tc := range cases {
		cmd, err := SSHCommand(tc.url, SSHOptions{})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error saying %q", tc.url, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if want := append(append([]string(nil), base...), tc.want...); !reflect.DeepEqual(cmd.Argv, want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.url, cmd.Argv, want)
		}
		if cmd.Name != tc.url {
			t.Errorf("%s: named %q", tc.url, cmd.Name)
		}
	}
	cmd, err := SSHCommand("ssh://h/r", SSHOptions{Program: "/usr/bin/ssh", Options: []string{"Port=2200", "ProxyJump=gw"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cmd.Argv, " "); !strings.HasPrefix(got, "/usr/bin/ssh ") || !strings.Contains(got, "-o Port=2200 -o ProxyJump=gw -- h") {
		t.Errorf("options: %s", got)
	}
	if _, err := SSHCommand("ssh://h/r", SSHOptions{Options: []string{"-F/etc/evil"}}); err == nil {
		t.Error("an option starting with '-' accepted")
	}
}

func TestShellCommand(t *testing.T) {
	cmd, err := ShellCommand(`ssh -p 2020 host bupstash serve "/data/my repository"`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ssh", "-p", "2020", "host", "bupstash", "serve", "/data/my repository"}; !reflect.DeepEqual(cmd.Argv, want) {
		t.Fatalf("%q", cmd.Argv)
	}
	for _, bad := range []string{"", "   ", `ssh "unterminated`} {
		if _, err := ShellCommand(bad); err == nil || !strings.Contains(err.Error(), "BUPSTASH_REPOSITORY_COMMAND") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestQuoteLine(t *testing.T) {
	for in, want := range map[string]string{
		"bupstash serve: fine":   "bupstash serve: fine",
		"esc\x1b[31mred":         `esc\x1b[31mred`,
		"bad \xff utf8":          `bad \xff utf8`,
		"tab\there":              `tab\x09here`,
		strings.Repeat("a", 400): strings.Repeat("a", maxShownLen) + "…",
	} {
		if got := quoteLine(in); got != want {
			t.Errorf("quoteLine(%q) = %q, want %q", in, got, want)
		}
	}
}
