package auction

import "strings"

const preloadedScheme = "preloaded"

// rootFSProvider returns the entry a cell must list in its rootfs providers to run the rootfs
// uri: the URI itself for "preloaded:<stack>", the bare scheme ("docker", "oci") otherwise. It
// reports false for a URI without a scheme or a preloaded URI without a stack.
//
// It is the same rule as models.RootFSProvidedBy, which is being added to bbs/models; the
// auction keeps the provider string rather than a predicate so it can index cells by it once
// per batch.
func rootFSProvider(uri string) (string, bool) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || scheme == "" {
		return "", false
	}
	if scheme == preloadedScheme {
		return uri, rest != ""
	}
	return scheme, true
}
