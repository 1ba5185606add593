package untrusted

// The most bytes each kind of untrusted file may hold. Each follows from
// what writers produce, with room to spare; a file over its limit is
// refused before anything is allocated for it.
const (
	// ItemFile: Bupstash limits an item's encoded tag set to 32 KiB
	// (main.rs, oplog.rs), so item metadata stays under 34 KiB.
	ItemFile = 1 << 20
	// SchemaVersion and StorageEngine are meta/ files of a few bytes: a
	// number, and "DirStore" or a small JSON object.
	SchemaVersion = 64
	StorageEngine = 64 << 10
	// GCGeneration is meta/gc_generation: 32 hex digits.
	GCGeneration = 64
	// TransactionLog is a hot tx.wal (schema 8) or rollback.journal
	// (schemas 5 to 7). It holds whole metadata files: item files, and
	// the oplog that bupstash gc rewrites (about 300 bytes per item), so
	// 64 MiB covers a crash during a gc of some 200,000 items. A larger
	// one is refused with advice to let Bupstash recover the repository.
	TransactionLog = 64 << 20
	// Key is a Bupstash key file: about 1.5 KiB armored, plus comments.
	Key = 64 << 10
	// Config is backupfs's configuration file.
	Config = 1 << 20
	// Token is a Backupy decryption token (a JWT of a few hundred bytes).
	Token = 64 << 10
	// Keyring is a Backupy keyring file: about 150 bytes per entry.
	Keyring = 16 << 20
	// CommandOutput is what BUPSTASH_KEY_COMMAND may print: a key file.
	CommandOutput = Key
)
