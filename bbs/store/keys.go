package store

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/trellis-run/trellis/bbs/models"
)

// keys builds and parses the etcd keys of the records:
//
//	<prefix>desired/<process_guid>
//	<prefix>actual/<process_guid>/<index, 10 digits>/<presence>
//	<prefix>tasks/<task_guid>
//	<prefix>cells/<cell_id>         (under the cell's lease)
//	<prefix>domains/<name>          (under a lease when it has a ttl)
//	<prefix>locks/<name>            (under the holder's lease)
//
// Indices are zero-padded so that a prefix read returns a process's instances in index order,
// and all presences of one index are adjacent.
type keys struct {
	prefix  string
	desired string
	actual  string
	tasks   string
	cells   string
	domains string
	locks   string
}

func newKeys(prefix string) keys {
	return keys{
		prefix:  prefix,
		desired: prefix + "desired/",
		actual:  prefix + "actual/",
		tasks:   prefix + "tasks/",
		cells:   prefix + "cells/",
		domains: prefix + "domains/",
		locks:   prefix + "locks/",
	}
}

// indexWidth is the number of digits of a padded index: every int32 fits.
const indexWidth = 10

func (k keys) desiredKey(guid string) string { return k.desired + guid }

// actualProcess is the prefix of every instance of a process.
func (k keys) actualProcess(guid string) string { return k.actual + guid + "/" }

// actualIndex is the prefix of every presence of one index.
func (k keys) actualIndex(guid string, index int32) string {
	return fmt.Sprintf("%s%s/%0*d/", k.actual, guid, indexWidth, index)
}

func (k keys) actualKey(key models.ActualLRPKey, presence string) string {
	return k.actualIndex(key.ProcessGuid, key.Index) + presence
}

func (k keys) taskKey(guid string) string   { return k.tasks + guid }
func (k keys) cellKey(id string) string     { return k.cells + id }
func (k keys) domainKey(name string) string { return k.domains + name }
func (k keys) lockKey(name string) string   { return k.locks + name }

// parseActual splits the part of an actual key after k.actual into its fields.
func parseActual(rest string) (guid string, index int32, presence string, ok bool) {
	guid, rest, ok1 := strings.Cut(rest, "/")
	idx, presence, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || guid == "" || presence == "" {
		return "", 0, "", false
	}
	n, err := strconv.ParseInt(idx, 10, 32)
	if err != nil {
		return "", 0, "", false
	}
	return guid, int32(n), presence, true
}

// validateActualKey refuses keys that cannot name an instance: they would build a key outside
// the process's own prefix.
func validateActualKey(key models.ActualLRPKey) error {
	if err := models.ValidateGuid("process_guid", key.ProcessGuid); err != nil {
		return err
	}
	if key.Index < 0 {
		return &models.FieldError{Field: "index", Reason: fmt.Sprintf("must not be negative, got %d", key.Index)}
	}
	return nil
}

func validatePresence(presence string) error {
	switch presence {
	case models.PresenceOrdinary, models.PresenceEvacuating, models.PresenceSuspect:
		return nil
	}
	return &models.FieldError{Field: "presence", Reason: fmt.Sprintf("unknown presence %q (want ORDINARY, EVACUATING or SUSPECT)", presence)}
}

// validateName refuses names that would escape their key prefix or be empty.
func validateName(field, name string) error {
	if name == "" {
		return &models.FieldError{Field: field, Reason: "must not be empty"}
	}
	if strings.ContainsAny(name, "/\x00") {
		return &models.FieldError{Field: field, Reason: fmt.Sprintf("must not contain '/' or NUL, got %q", name)}
	}
	return nil
}
