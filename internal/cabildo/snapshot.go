package cabildo

// Snapshot is a serialized projection together with the log position it reflects, so a
// node can start from it and consume only the log's tail. Log identifies the log it was
// built from (the stream's creation time); a snapshot from another log is never used.
type Snapshot struct {
	Seq  uint64 `json:"seq"`
	Log  string `json:"log"`
	Data []byte `json:"data"`
}
