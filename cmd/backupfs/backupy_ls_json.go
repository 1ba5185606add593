package main

import (
	"time"

	"github.com/backupfs/backupfs/repo/backupy"
)

// backupyLsJSONHelp documents backupy ls --json's fields.
const backupyLsJSONHelp = `--json prints one JSON object per object, its fields named as in the
<name>.meta.json view of a mount: object_key (the path in the store), kind,
state (locked, encrypted, unencrypted, verified or corrupt), ciphertext_size,
mtime (RFC 3339), decoded_size (null until known; --sizes decodes to know it),
run_id (when known), key (null without one, else {"matched_by": "path", "run",
"sha256" or "trial"}), and file, the name the object has in a mount (null when
it cannot be opened). Names that are not UTF-8 are arrays of byte values.`

// backupyLsRecord is one line of backupy ls --json.
type backupyLsRecord struct {
	ObjectKey      losslessText  `json:"object_key"`
	Kind           backupy.Kind  `json:"kind"`
	State          string        `json:"state"`
	CiphertextSize int64         `json:"ciphertext_size"`
	ModTime        time.Time     `json:"mtime"`
	DecodedSize    *int64        `json:"decoded_size"`
	RunID          string        `json:"run_id,omitempty"`
	Key            *backupyLsKey `json:"key"`
	File           *losslessText `json:"file"`
}

type backupyLsKey struct {
	MatchedBy string `json:"matched_by"`
}

// backupyRecord describes b, with what backupyLs learned of it: its
// decoded size (nil if unknown) and its name in a mount ("?" if it could
// not be opened).
func backupyRecord(b *backupy.Blob, decoded *int64, name string) backupyLsRecord {
	rec := backupyLsRecord{
		ObjectKey:      losslessText(b.Path),
		Kind:           b.Kind,
		State:          b.State(),
		CiphertextSize: b.Size,
		ModTime:        b.ModTime.UTC(),
		DecodedSize:    decoded,
		RunID:          b.RunID(),
	}
	if how := b.KeyMatch(); how != "" {
		rec.Key = &backupyLsKey{MatchedBy: how}
	}
	if name != "?" {
		f := losslessText(name)
		rec.File = &f
	}
	return rec
}
