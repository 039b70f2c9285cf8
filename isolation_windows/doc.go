// Package isolationwindows is the Windows isolation backend: processes in job objects, or
// Windows Server containers through HCS.
package isolationwindows
