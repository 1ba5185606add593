// Package serve reads Bupstash repositories through `bupstash serve`, the
// server Bupstash itself runs over ssh (ssh:// repositories) or through
// BUPSTASH_REPOSITORY_COMMAND. It speaks the read-only part of the serve
// protocol: version "11" (Bupstash 0.10.x) and "13" (0.11.0 to 0.12.1).
//
// Layers, bottom up:
//
//   - packet.go, messages.go, logop.go: the wire. A packet is a 4-byte
//     little-endian payload length, a kind byte and the payload, mostly
//     serde_bare (see package bare). Only read-only requests can be
//     encoded at all; every response is decoded completely, trailing
//     bytes refused, and every length is bounded before anything is
//     allocated for it.
//   - process.go, command.go: the server process (ssh, or a command),
//     in a process group of its own, its stderr kept in a bounded ring:
//     the server reports every error there, as one "bupstash serve: …"
//     line, and then exits; the stream itself just ends.
//   - conn.go: one connection. Requests may be pipelined: the server
//     answers them strictly in order and never tags a response, so a
//     reader goroutine takes responses off the stream in request order,
//     each request knowing how to read its own answer (for tree-shaped
//     answers, by walking the tree exactly as the server does).
//   - dial.go: starting a connection and the version probe.
//   - oplog.go: the item list, from the server's operation log.
//   - requests.go, partial.go, treewalk.go: the requests, and the three
//     ways of fetching chunks: whole trees, partial-data cursors, pull
//     sessions.
//   - source.go, fetch.go, dialer.go, pullpool.go, cursorpool.go,
//     streampool.go: Source, a bupstash.Source over a few connections:
//     the item list kept in sync, chunks by the best route the server
//     allows, broken connections replaced, idle ones closed, an optional
//     disk cache of what was fetched.
//
// The server is untrusted: a response that the protocol does not allow is
// an error of the request that expected it, and ends the connection. A
// connection that sends nothing while an answer is due is ended after a
// bounded time. Chunks are returned exactly as stored and unverified,
// except interior tree nodes, which this package must read to follow the
// server's tree walks and so checks against their addresses.
package serve
