// Package cache is the cell's download cache: the artifacts that download actions fetch
// (buildpacks, droplets, app bits) are downloaded once per cell and served from disk after.
//
// Fetch downloads a URL over HTTP GET, verifies its checksum (sha256 or sha1) and returns the
// content as a stream:
//
//   - Without a cache key the content goes to a temporary file that is deleted when the
//     returned reader is closed; nothing is kept.
//   - With a cache key an entry that holds the same URL (and, when a checksum is given, the
//     same checksum) is served without touching the network. Otherwise the content is
//     downloaded once — concurrent Fetches of one key share a single download — verified, and
//     stored atomically (temporary file, fsync, rename) before it is served. A checksum
//     mismatch fails the Fetch with a *ChecksumError and stores nothing.
//   - A cached artifact that is a gzipped tar is stored as the tar inside it, decompressed once
//     when stored, and served as that tar: the download action unpacks a gzipped tar and a
//     tar alike, and a droplet fetched by hundreds of instances is then not decompressed
//     hundreds of times. Checksums are always those of what was downloaded.
//
// The cache holds at most Config.MaxBytes of entries and evicts the least recently used past
// it. An entry being read is never deleted under its reader: it is evicted (or, when a new
// download replaced it, deleted) once its last reader closes. An artifact larger than MaxBytes
// is served like an uncached download. Entries survive a restart: New rebuilds the index from
// the directory, using file modification times as last-use times, and removes leftovers of
// interrupted downloads.
//
// Layout under Config.Dir: entries/<sha256 of key>.json (metadata), blobs/<sha256 of
// key>-<random>.blob (content), tmp/ (downloads in progress).
package cache
