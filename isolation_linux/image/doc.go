// Package image turns Docker and OCI image references into container contents on a cell.
//
// It has two halves:
//
//   - Resolve (platform-neutral, no Linux code) asks a registry which manifest digest a tag
//     names right now. The BBS calls it once when a DesiredLRP with a docker:// or oci://
//     rootfs is created, so that every instance of it runs the same bytes even if the tag
//     moves later.
//   - Store (Linux) is the cell-local layer cache. Pull fetches an image's manifest from the
//     cell's registry mirrors or the origin registry, downloads each layer once (concurrent
//     pulls of a layer share one download), verifies its digest before anything is unpacked,
//     and unpacks it into its own read-only directory: whiteouts become what overlayfs
//     expects (a 0/0 character device for a removed entry, the overlay "opaque" xattr for an
//     opaque directory) and ownership is shifted into the user-namespace range of
//     unprivileged containers. The result is an Image: layer directories, bottom to top,
//     ready to be stacked as overlayfs lower directories (Image.LowerDir), and the image's
//     run configuration (entrypoint, cmd, env, working dir, user, exposed ports).
//
// Layers are reference-counted by the Images that use them; Image.Release drops the
// references and Store.Acquire takes them again after an agent restart (by Image.ID).
// Unreferenced layers are garbage-collected, least recently used first, once the cache is
// larger than Config.MaxBytes. The index of what is cached lives on disk and is rebuilt by
// NewStore; anything a crash left half-downloaded or half-unpacked is discarded then.
//
// Registry credentials are used for the origin registry only (never sent to mirrors), and
// never appear in logs or error strings.
//
// See docs/images.md for the on-disk layout and the reasoning behind the choices.
package image
