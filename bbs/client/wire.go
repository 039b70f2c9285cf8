package client

import (
	"github.com/trellis-run/trellis/bbs/certs"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// The request and response bodies of the BBS HTTP API (docs/api.md). The server decodes
// requests strictly: unknown fields are refused.

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody names the error class (models.ErrorType, or "InvalidRequest" for a body or
// parameter that cannot be parsed) and says what went wrong.
type ErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// InfoResponse answers GET /v1/info: the server version, who the caller is, and the store's
// current revision.
type InfoResponse struct {
	Version  string         `json:"version"`
	Identity certs.Identity `json:"identity"`
	Revision int64          `json:"revision"`
}

// HealthResponse answers GET /healthz.
type HealthResponse struct {
	Status   string `json:"status"`
	Revision int64  `json:"revision,omitempty"`
}

// DesiredLRPsResponse answers GET /v1/desired_lrps; Revision is the store revision the list was
// read at (watch events from it to stay in sync).
type DesiredLRPsResponse struct {
	DesiredLRPs []*models.DesiredLRP `json:"desired_lrps"`
	Revision    int64                `json:"revision"`
}

// ActualLRPsResponse answers GET /v1/actual_lrps and GET /v1/actual_lrps/{guid}/{index}.
type ActualLRPsResponse struct {
	ActualLRPs []*models.ActualLRP `json:"actual_lrps"`
	Revision   int64               `json:"revision"`
}

// TasksResponse answers GET /v1/tasks.
type TasksResponse struct {
	Tasks    []*models.Task `json:"tasks"`
	Revision int64          `json:"revision"`
}

// CellsResponse answers GET /v1/cells.
type CellsResponse struct {
	Cells    []*models.CellPresence `json:"cells"`
	Revision int64                  `json:"revision"`
}

// DomainsResponse answers GET /v1/domains.
type DomainsResponse struct {
	Domains []*models.Domain `json:"domains"`
}

// PlaceRequest places an UNCLAIMED instance or a PENDING task on a cell (brain).
type PlaceRequest struct {
	CellID   string `json:"cell_id"`
	Revision int64  `json:"revision,omitempty"`
}

// ReasonRequest carries a reason: a failed placement (brain), a failed task (brain).
type ReasonRequest struct {
	Reason   string `json:"reason"`
	Revision int64  `json:"revision,omitempty"`
}

// RevisionRequest carries only the expected revision (0 = any): restart, suspect (brain).
type RevisionRequest struct {
	Revision int64 `json:"revision,omitempty"`
}

// RetireRequest retires one presence of an instance (brain).
type RetireRequest struct {
	Presence string `json:"presence"`
	Revision int64  `json:"revision,omitempty"`
}

// EmptyRequest is the body of actions that take no arguments; an empty body is accepted too.
type EmptyRequest struct{}

// InstanceRequest names the container acting on an instance: claim and evacuate (cell).
type InstanceRequest struct {
	InstanceGuid string `json:"instance_guid"`
	CellID       string `json:"cell_id"`
	// WithDesired (claim only) asks for the answer ClaimActualLRPResponse, which carries the
	// instance's DesiredLRP too; without it the answer is the ActualLRP.
	WithDesired bool `json:"with_desired,omitempty"`
}

// ClaimActualLRPResponse answers a claim asked WithDesired.
type ClaimActualLRPResponse struct {
	ActualLRP  *models.ActualLRP  `json:"actual_lrp"`
	DesiredLRP *models.DesiredLRP `json:"desired_lrp"`
}

// StartActualLRPRequest reports an instance RUNNING (cell).
type StartActualLRPRequest struct {
	InstanceGuid string                  `json:"instance_guid"`
	CellID       string                  `json:"cell_id"`
	NetInfo      models.ActualLRPNetInfo `json:"net_info"`
}

// CrashActualLRPRequest reports a crashed instance (cell).
type CrashActualLRPRequest struct {
	InstanceGuid string `json:"instance_guid"`
	CellID       string `json:"cell_id"`
	Reason       string `json:"reason"`
}

// RejectRequest gives back work a cell cannot run: an instance or a task (cell).
type RejectRequest struct {
	CellID string `json:"cell_id"`
	Reason string `json:"reason"`
}

// RemoveActualLRPRequest removes the record a cell stopped (cell).
type RemoveActualLRPRequest struct {
	InstanceGuid string `json:"instance_guid"`
	CellID       string `json:"cell_id"`
	Presence     string `json:"presence"`
}

// CellRequest names the acting cell: task start (cell).
type CellRequest struct {
	CellID string `json:"cell_id"`
}

// StartTaskResponse answers a task start; ShouldStart is false for a repeated start of a task
// already RUNNING on the cell.
type StartTaskResponse struct {
	ShouldStart bool `json:"should_start"`
}

// CompleteTaskRequest reports a task's outcome (cell).
type CompleteTaskRequest struct {
	CellID        string `json:"cell_id"`
	Failed        bool   `json:"failed"`
	FailureReason string `json:"failure_reason,omitempty"`
	Result        string `json:"result,omitempty"`
}

// DomainRequest marks a domain fresh for TTLSeconds (0 = forever) (operator).
type DomainRequest struct {
	TTLSeconds int64 `json:"ttl_seconds"`
}

// LockRequest takes or renews a lock for TTLMs milliseconds (brain).
type LockRequest struct {
	Owner string `json:"owner"`
	TTLMs int64  `json:"ttl_ms"`
}

// LockResponse answers lock reads and writes; Owner is "" when the lock is free.
type LockResponse struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
}

// ActualLRPBatchRequest carries many of the brain's instance writes, applied in one request
// (POST /v1/actual_lrps/batch): at most store.MaxActualLRPOps.
type ActualLRPBatchRequest struct {
	Ops []store.ActualLRPOp `json:"ops"`
}

// ActualLRPBatchResponse answers a batch with one result per operation, in the order given.
type ActualLRPBatchResponse struct {
	Results []ActualLRPBatchResult `json:"results"`
}

// ActualLRPBatchResult is one operation's outcome: the record its single call answers (none
// for a retire), or the error that call would answer, with its HTTP status.
type ActualLRPBatchResult struct {
	ActualLRP *models.ActualLRP `json:"actual_lrp,omitempty"`
	Error     *ErrorBody        `json:"error,omitempty"`
	Status    int               `json:"status"`
}
