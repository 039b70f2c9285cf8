package models

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// RootFS URI schemes.
//
//   - preloaded:<stack>           a stack the cell ships, e.g. "preloaded:cflinuxfs4"
//   - docker:///<repo>[:tag|@digest]             an image from the default registry
//   - docker://<registry>/<repo>[:tag|@digest]   an image from a named registry
//   - oci://... with the same forms as docker
//
// Diego's "docker:///<repo>#<tag>" is accepted as a synonym of ":<tag>".
const (
	RootFSSchemePreloaded = "preloaded"
	RootFSSchemeDocker    = "docker"
	RootFSSchemeOCI       = "oci"
)

const maxImageRefLength = 512

// PreloadedRootFS returns the rootfs URI of a preloaded stack ("preloaded:<stack>").
func PreloadedRootFS(stack string) string { return RootFSSchemePreloaded + ":" + stack }

// ParseRootFS splits and checks a rootfs URI. For preloaded it returns the stack as rest; for
// docker and oci it returns the image reference as rest, "[registry/]repo[:tag][@digest]"
// (the registry is omitted for the default one, and a Diego "#tag" becomes ":tag"). The error
// is a *FieldError for field "rootfs" saying what is wrong.
func ParseRootFS(uri string) (scheme, rest string, err error) {
	if uri == "" {
		return "", "", fieldErr("rootfs", "is required (e.g. preloaded:<stack> or docker:///<image>)")
	}
	i := strings.IndexByte(uri, ':')
	if i <= 0 {
		return "", "", fieldErr("rootfs", "%q has no scheme (want preloaded:<stack>, docker:///<image> or oci://<image>)", uri)
	}
	scheme, rest = uri[:i], uri[i+1:]
	switch scheme {
	case RootFSSchemePreloaded:
		if reason := checkStack(rest); reason != "" {
			return "", "", fieldErr("rootfs", "%s in %q", reason, uri)
		}
		return scheme, rest, nil
	case RootFSSchemeDocker, RootFSSchemeOCI:
		ref, reason := parseImageURI(rest)
		if reason != "" {
			return "", "", fieldErr("rootfs", "invalid %s image %q: %s", scheme, uri, reason)
		}
		return scheme, ref, nil
	default:
		return "", "", fieldErr("rootfs", "unknown rootfs scheme %q (want preloaded, docker or oci)", scheme)
	}
}

// RootFSScheme returns the scheme of a rootfs URI ("preloaded", "docker", "oci") without
// checking the rest, or "" when uri has none. Use it on records that were validated.
func RootFSScheme(uri string) string {
	i := strings.IndexByte(uri, ':')
	if i <= 0 {
		return ""
	}
	return uri[:i]
}

// RootFSStack returns the stack of a "preloaded:<stack>" URI and true, or "" and false for any
// other URI.
func RootFSStack(uri string) (string, bool) {
	stack, ok := strings.CutPrefix(uri, RootFSSchemePreloaded+":")
	if !ok || stack == "" {
		return "", false
	}
	return stack, true
}

// RequiredRootFSProvider returns the entry a cell must list in its rootfs_providers to run
// rootfs: the URI itself for "preloaded:<stack>", the bare scheme ("docker", "oci") for any
// other scheme. It reports false for a URI without a scheme or a preloaded URI without a
// stack. It does not re-validate the rest of rootfs; callers pass records that passed
// Validate. The auctioneer can use it to index cells by provider once per batch.
func RequiredRootFSProvider(rootfs string) (string, bool) {
	scheme := RootFSScheme(rootfs)
	switch {
	case scheme == "":
		return "", false
	case scheme == RootFSSchemePreloaded:
		return rootfs, len(rootfs) > len(RootFSSchemePreloaded)+1
	default:
		return scheme, true
	}
}

// RootFSProvidedBy reports whether a cell announcing providers can run rootfs (the
// auctioneer's rootfs filter): a "preloaded:<stack>" rootfs needs a provider equal to it; any
// other scheme needs that bare scheme ("docker"). See RequiredRootFSProvider.
func RootFSProvidedBy(rootfs string, providers []string) bool {
	want, ok := RequiredRootFSProvider(rootfs)
	if !ok {
		return false
	}
	for _, p := range providers {
		if p == want {
			return true
		}
	}
	return false
}

// ValidateRootFSProvider checks one entry of a cell's rootfs_providers: "preloaded:<stack>"
// or a bare scheme other than preloaded ("docker", "oci"). The error is a *FieldError naming
// field.
func ValidateRootFSProvider(field, provider string) error {
	switch provider {
	case RootFSSchemeDocker, RootFSSchemeOCI:
		return nil
	case "":
		return fieldErr(field, "must not be empty")
	}
	stack, ok := strings.CutPrefix(provider, RootFSSchemePreloaded+":")
	if !ok {
		return fieldErr(field, "%q is neither preloaded:<stack> nor a bare scheme (docker or oci)", provider)
	}
	if reason := checkStack(stack); reason != "" {
		return fieldErr(field, "%s in %q", reason, provider)
	}
	return nil
}

// checkStack returns why stack is not a valid preloaded stack name, or "".
func checkStack(stack string) string {
	if stack == "" {
		return "empty stack name"
	}
	if len(stack) > MaxGuidLength {
		return "stack name longer than " + strconv.Itoa(MaxGuidLength) + " bytes"
	}
	for i := 0; i < len(stack); i++ {
		if !isDomainByte(stack[i]) {
			return "stack name has " + quoteCharAt(stack, i) + " at byte " + strconv.Itoa(i) +
				" (allowed: letters, digits, '_', '-' and '.')"
		}
	}
	return ""
}

// parseImageURI parses what follows "docker:" or "oci:": "//[registry]/repo[:tag][@digest]".
// It returns the normalised reference or why it is refused.
func parseImageURI(s string) (ref, reason string) {
	if len(s) > maxImageRefLength {
		return "", "longer than " + strconv.Itoa(maxImageRefLength) + " bytes"
	}
	s, ok := strings.CutPrefix(s, "//")
	if !ok {
		return "", "want //<registry>/<repository> or ///<repository>"
	}
	slash := strings.IndexByte(s, '/')
	if slash < 0 {
		return "", "no repository after the registry"
	}
	registry, path := s[:slash], s[slash+1:]
	if registry != "" {
		if r := checkRegistry(registry); r != "" {
			return "", r
		}
	}
	// A Diego-style "#tag" fragment.
	var fragTag string
	if i := strings.IndexByte(path, '#'); i >= 0 {
		path, fragTag = path[:i], path[i+1:]
		if fragTag == "" {
			return "", "empty tag after '#'"
		}
	}
	var digest string
	if i := strings.IndexByte(path, '@'); i >= 0 {
		path, digest = path[:i], path[i+1:]
		if r := checkDigest(digest); r != "" {
			return "", r
		}
	}
	tag := ""
	if i := strings.LastIndexByte(path, ':'); i >= 0 && !strings.Contains(path[i:], "/") {
		path, tag = path[:i], path[i+1:]
		if tag == "" {
			return "", "empty tag after ':'"
		}
	}
	if fragTag != "" {
		if tag != "" {
			return "", "both a ':' tag and a '#' tag"
		}
		tag = fragTag
	}
	if tag != "" {
		if r := checkTag(tag); r != "" {
			return "", r
		}
	}
	if r := checkRepository(path); r != "" {
		return "", r
	}
	ref = path
	if registry != "" {
		ref = registry + "/" + path
	}
	if tag != "" {
		ref += ":" + tag
	}
	if digest != "" {
		ref += "@" + digest
	}
	return ref, ""
}

// quoteCharAt quotes the character that starts at byte i of s.
func quoteCharAt(s string, i int) string {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return strconv.QuoteRune(r)
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// checkRepository checks "component(/component)*", each component lower-case alphanumerics
// joined by single '.', one or two '_' or any run of '-'.
func checkRepository(path string) string {
	if path == "" {
		return "empty repository"
	}
	for _, comp := range strings.Split(path, "/") {
		if comp == "" {
			return "empty path component in repository " + strconv.Quote(path)
		}
		if !isLowerAlnum(comp[0]) || !isLowerAlnum(comp[len(comp)-1]) {
			return "repository component " + strconv.Quote(comp) + " must start and end with a lower-case letter or digit"
		}
		for i := 0; i < len(comp); i++ {
			c := comp[i]
			switch {
			case isLowerAlnum(c):
			case c == '-':
				// Any run of '-' between alphanumerics.
				n := i + 1
				for comp[n] == '-' {
					n++
				}
				if !isLowerAlnum(comp[n]) {
					return "repository component " + strconv.Quote(comp) + " has a misplaced separator"
				}
				i = n - 1
			case c == '.' || c == '_':
				// '.' and '_' separate alphanumerics; only "__" may double.
				n := i + 1
				if c == '_' && n < len(comp) && comp[n] == '_' {
					n++
				}
				if !isLowerAlnum(comp[n]) {
					return "repository component " + strconv.Quote(comp) + " has a misplaced separator"
				}
				i = n - 1
			default:
				return "repository component " + strconv.Quote(comp) + " has " + quoteCharAt(comp, i) +
					" (allowed: lower-case letters, digits, '.', '_', '-')"
			}
		}
	}
	return ""
}

// checkRegistry checks "host[:port]": dot-separated labels of letters, digits and inner '-'.
func checkRegistry(reg string) string {
	host := reg
	if i := strings.LastIndexByte(reg, ':'); i >= 0 {
		host = reg[:i]
		port := reg[i+1:]
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 || port[0] == '0' {
			return "registry port " + strconv.Quote(port) + " must be a number between 1 and 65535"
		}
	}
	if host == "" {
		return "empty registry host"
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return "invalid registry host " + strconv.Quote(host)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(isLowerAlnum(c) || c >= 'A' && c <= 'Z' || c == '-') {
				return "invalid registry host " + strconv.Quote(host)
			}
		}
	}
	return ""
}

// checkTag checks a tag: a word character then up to 127 word characters, '.' or '-'.
func checkTag(tag string) string {
	if len(tag) > 128 {
		return "tag longer than 128 bytes"
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		word := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
		if !word && (i == 0 || c != '.' && c != '-') {
			return "invalid tag " + strconv.Quote(tag)
		}
	}
	return ""
}

// checkDigest checks "algorithm:hex"; sha256 needs 64 and sha512 128 lower-case hex digits.
func checkDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || alg == "" || hex == "" {
		return "digest " + strconv.Quote(d) + " is not algorithm:hex"
	}
	want := 0
	switch alg {
	case "sha256":
		want = 64
	case "sha512":
		want = 128
	default:
		return "digest algorithm " + strconv.Quote(alg) + " is not sha256 or sha512"
	}
	if len(hex) != want {
		return "digest " + strconv.Quote(d) + " must have " + strconv.Itoa(want) + " hex digits"
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "digest " + strconv.Quote(d) + " must be lower-case hex"
		}
	}
	return ""
}
