package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

// Client answers every method of store.Interface over the API.
var _ store.Interface = (*Client)(nil)

// ---- Desired LRPs (operator) ----

// DesireLRP creates a DesiredLRP and its UNCLAIMED instances. Errors: InvalidRecord,
// AlreadyExists, Forbidden (not an operator).
func (c *Client) DesireLRP(ctx context.Context, lrp *models.DesiredLRP) (*models.DesiredLRP, error) {
	var out models.DesiredLRP
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/desired_lrps", body: lrp}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DesiredLRP returns one DesiredLRP. Errors: NotFound.
func (c *Client) DesiredLRP(ctx context.Context, processGuid string) (*models.DesiredLRP, error) {
	var out models.DesiredLRP
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/desired_lrps/" + seg(processGuid)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DesiredLRPs lists DesiredLRPs matching filter and the revision they were read at.
func (c *Client) DesiredLRPs(ctx context.Context, filter store.DesiredLRPFilter) ([]*models.DesiredLRP, int64, error) {
	q := url.Values{}
	if filter.Domain != "" {
		q.Set("domain", filter.Domain)
	}
	if len(filter.ProcessGuids) > 0 {
		q.Set("process_guid", strings.Join(filter.ProcessGuids, ","))
	}
	var out DesiredLRPsResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/desired_lrps", query: q}, &out); err != nil {
		return nil, 0, err
	}
	return out.DesiredLRPs, out.Revision, nil
}

// UpdateDesiredLRP changes the updatable fields; a non-zero expectRevision is sent as If-Match.
// Errors: NotFound, InvalidRecord, Conflict.
func (c *Client) UpdateDesiredLRP(ctx context.Context, processGuid string, update models.DesiredLRPUpdate, expectRevision int64) (*models.DesiredLRP, error) {
	r := request{method: http.MethodPatch, path: "/v1/desired_lrps/" + seg(processGuid), body: update}
	if expectRevision != 0 {
		r.header = http.Header{"If-Match": {strconv.Quote(strconv.FormatInt(expectRevision, 10))}}
	}
	var out models.DesiredLRP
	if err := c.do(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveDesiredLRP deletes a DesiredLRP and retires its instances. Errors: NotFound.
func (c *Client) RemoveDesiredLRP(ctx context.Context, processGuid string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/v1/desired_lrps/" + seg(processGuid)}, nil)
}

// ---- Actual LRPs: reads and the operator's restart ----

// ActualLRPs lists instances matching filter (every presence) and the read revision.
func (c *Client) ActualLRPs(ctx context.Context, filter store.ActualLRPFilter) ([]*models.ActualLRP, int64, error) {
	q := url.Values{}
	for k, v := range map[string]string{"process_guid": filter.ProcessGuid, "cell_id": filter.CellID, "domain": filter.Domain} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if filter.Index != nil {
		q.Set("index", strconv.Itoa(int(*filter.Index)))
	}
	var out ActualLRPsResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/actual_lrps", query: q}, &out); err != nil {
		return nil, 0, err
	}
	return out.ActualLRPs, out.Revision, nil
}

// ActualLRP returns every presence of one instance. Errors: NotFound (none).
func (c *Client) ActualLRP(ctx context.Context, processGuid string, index int32) ([]*models.ActualLRP, error) {
	var out ActualLRPsResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: actualPath(processGuid, index, "")}, &out); err != nil {
		return nil, err
	}
	return out.ActualLRPs, nil
}

// RestartActualLRPInstance (operator) retires the ORDINARY record of the instance, so its cell
// stops the container, and creates it UNCLAIMED again; it returns the new record.
// Errors: NotFound.
func (c *Client) RestartActualLRPInstance(ctx context.Context, processGuid string, index int32) (*models.ActualLRP, error) {
	var out models.ActualLRP
	if err := c.do(ctx, request{method: http.MethodDelete, path: actualPath(processGuid, index, "")}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func actualPath(processGuid string, index int32, action string) string {
	p := "/v1/actual_lrps/" + seg(processGuid) + "/" + strconv.Itoa(int(index))
	if action != "" {
		p += "/" + action
	}
	return p
}

// actualAction posts body to an instance action and decodes the record answered.
func (c *Client) actualAction(ctx context.Context, key models.ActualLRPKey, action string, body any) (*models.ActualLRP, error) {
	var out models.ActualLRP
	if err := c.do(ctx, request{method: http.MethodPost, path: actualPath(key.ProcessGuid, key.Index, action), body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ---- Actual LRPs: brain ----

// CreateUnclaimedActualLRP creates an UNCLAIMED instance for a missing index.
// Errors: NotFound, AlreadyExists, InvalidRecord.
func (c *Client) CreateUnclaimedActualLRP(ctx context.Context, key models.ActualLRPKey) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "unclaimed", EmptyRequest{})
}

// PlaceActualLRP records the auctioneer's decision. Errors: NotFound, InvalidTransition, Conflict.
func (c *Client) PlaceActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, expectRevision int64) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "place", PlaceRequest{CellID: cellID, Revision: expectRevision})
}

// FailActualLRPPlacement records why no cell could take the instance.
// Errors: NotFound, InvalidTransition, Conflict.
func (c *Client) FailActualLRPPlacement(ctx context.Context, key models.ActualLRPKey, reason string, expectRevision int64) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "fail_placement", ReasonRequest{Reason: reason, Revision: expectRevision})
}

// RestartActualLRP moves a CRASHED instance back to UNCLAIMED.
// Errors: NotFound, InvalidTransition, Conflict.
func (c *Client) RestartActualLRP(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "restart", RevisionRequest{Revision: expectRevision})
}

// RetireActualLRP deletes the record of presence. Errors: NotFound, Conflict.
func (c *Client) RetireActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, expectRevision int64) error {
	return c.do(ctx, request{method: http.MethodPost, path: actualPath(key.ProcessGuid, key.Index, "retire"),
		body: RetireRequest{Presence: presence, Revision: expectRevision}}, nil)
}

// MarkActualLRPSuspect keeps the instance of a vanished cell as SUSPECT and creates an
// UNCLAIMED replacement. Errors: NotFound, InvalidTransition, Conflict.
func (c *Client) MarkActualLRPSuspect(ctx context.Context, key models.ActualLRPKey, expectRevision int64) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "suspect", RevisionRequest{Revision: expectRevision})
}

// ApplyActualLRPOps applies many of the brain's instance writes in one request; each result
// carries the record or the error (an *APIError) of its operation. Errors (of the request as a
// whole): InvalidRecord (more than store.MaxActualLRPOps), Unavailable.
func (c *Client) ApplyActualLRPOps(ctx context.Context, ops []store.ActualLRPOp) ([]store.ActualLRPOpResult, error) {
	var out ActualLRPBatchResponse
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/actual_lrps/batch",
		body: ActualLRPBatchRequest{Ops: ops}}, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(ops) {
		return nil, fmt.Errorf("client: POST /v1/actual_lrps/batch: %d results for %d operations", len(out.Results), len(ops))
	}
	results := make([]store.ActualLRPOpResult, len(ops))
	for i, r := range out.Results {
		if r.Error != nil {
			results[i].Err = &APIError{Status: r.Status, Type: r.Error.Type, Message: r.Error.Message}
			continue
		}
		results[i].ActualLRP = r.ActualLRP
	}
	return results, nil
}

// ---- Actual LRPs: cell ----

// ClaimActualLRP claims an instance placed on the caller's cell.
// Errors: NotFound, InvalidTransition, Forbidden.
func (c *Client) ClaimActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "claim", InstanceRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID})
}

// ClaimActualLRPWithDesired claims an instance placed on the caller's cell and returns its
// DesiredLRP along. Errors: ClaimActualLRP's; NotFound when the DesiredLRP is gone.
func (c *Client) ClaimActualLRPWithDesired(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, *models.DesiredLRP, error) {
	var out ClaimActualLRPResponse
	body := InstanceRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID, WithDesired: true}
	if err := c.do(ctx, request{method: http.MethodPost, path: actualPath(key.ProcessGuid, key.Index, "claim"), body: body}, &out); err != nil {
		return nil, nil, err
	}
	if out.ActualLRP == nil || out.DesiredLRP == nil {
		return nil, nil, fmt.Errorf("claim %s/%d: the BBS answered without the records asked for (an older BBS?)", key.ProcessGuid, key.Index)
	}
	return out.ActualLRP, out.DesiredLRP, nil
}

// StartActualLRP reports the instance RUNNING at netInfo. Errors: NotFound, InvalidTransition,
// Forbidden.
func (c *Client) StartActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, netInfo models.ActualLRPNetInfo) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "start", StartActualLRPRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID, NetInfo: netInfo})
}

// CrashActualLRP reports the instance crashed. Errors: NotFound, InvalidTransition, Forbidden.
func (c *Client) CrashActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey, reason string) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "crash", CrashActualLRPRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID, Reason: reason})
}

// RejectActualLRP gives back an instance the cell cannot run.
// Errors: NotFound, InvalidTransition, Forbidden.
func (c *Client) RejectActualLRP(ctx context.Context, key models.ActualLRPKey, cellID string, reason string) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "reject", RejectRequest{CellID: cellID, Reason: reason})
}

// RemoveActualLRP deletes the record the cell stopped. Errors: NotFound, Forbidden.
func (c *Client) RemoveActualLRP(ctx context.Context, key models.ActualLRPKey, presence string, instanceKey models.ActualLRPInstanceKey) error {
	return c.do(ctx, request{method: http.MethodPost, path: actualPath(key.ProcessGuid, key.Index, "remove"),
		body: RemoveActualLRPRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID, Presence: presence}}, nil)
}

// EvacuateActualLRP hands a draining cell's instance over to a replacement.
// Errors: NotFound, InvalidTransition, Forbidden.
func (c *Client) EvacuateActualLRP(ctx context.Context, key models.ActualLRPKey, instanceKey models.ActualLRPInstanceKey) (*models.ActualLRP, error) {
	return c.actualAction(ctx, key, "evacuate", InstanceRequest{InstanceGuid: instanceKey.InstanceGuid, CellID: instanceKey.CellID})
}

// ---- Tasks ----

// DesireTask creates a PENDING task. Errors: InvalidRecord, AlreadyExists, Forbidden.
func (c *Client) DesireTask(ctx context.Context, task *models.Task) (*models.Task, error) {
	var out models.Task
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tasks", body: task}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Task returns one task. Errors: NotFound.
func (c *Client) Task(ctx context.Context, taskGuid string) (*models.Task, error) {
	var out models.Task
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/tasks/" + seg(taskGuid)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tasks lists tasks matching filter and the read revision.
func (c *Client) Tasks(ctx context.Context, filter store.TaskFilter) ([]*models.Task, int64, error) {
	q := url.Values{}
	if filter.Domain != "" {
		q.Set("domain", filter.Domain)
	}
	if filter.CellID != "" {
		q.Set("cell_id", filter.CellID)
	}
	var out TasksResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/tasks", query: q}, &out); err != nil {
		return nil, 0, err
	}
	return out.Tasks, out.Revision, nil
}

// taskAction posts body to a task action and decodes the task answered.
func (c *Client) taskAction(ctx context.Context, taskGuid, action string, body any) (*models.Task, error) {
	var out models.Task
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tasks/" + seg(taskGuid) + "/" + action, body: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PlaceTask (brain) places a PENDING task on cellID. Errors: NotFound, InvalidTransition, Conflict.
func (c *Client) PlaceTask(ctx context.Context, taskGuid, cellID string, expectRevision int64) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "place", PlaceRequest{CellID: cellID, Revision: expectRevision})
}

// FailTaskPlacement (brain) records why no cell could take the task.
func (c *Client) FailTaskPlacement(ctx context.Context, taskGuid, reason string, expectRevision int64) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "fail_placement", ReasonRequest{Reason: reason, Revision: expectRevision})
}

// StartTask (cell) moves a task placed on cellID to RUNNING; shouldStart is false on a repeat.
// Errors: NotFound, InvalidTransition, Forbidden.
func (c *Client) StartTask(ctx context.Context, taskGuid, cellID string) (bool, error) {
	var out StartTaskResponse
	err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tasks/" + seg(taskGuid) + "/start", body: CellRequest{CellID: cellID}}, &out)
	return out.ShouldStart, err
}

// RejectTask (cell) gives back a task the cell cannot run.
func (c *Client) RejectTask(ctx context.Context, taskGuid, cellID, reason string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "reject", RejectRequest{CellID: cellID, Reason: reason})
}

// CompleteTask (cell) reports the task's outcome.
func (c *Client) CompleteTask(ctx context.Context, taskGuid, cellID string, failed bool, failureReason, result string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "complete", CompleteTaskRequest{CellID: cellID, Failed: failed, FailureReason: failureReason, Result: result})
}

// FailTask (brain) completes a PENDING or RUNNING task as failed.
func (c *Client) FailTask(ctx context.Context, taskGuid, reason string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "fail", ReasonRequest{Reason: reason})
}

// CancelTask (operator) completes a PENDING or RUNNING task as cancelled.
func (c *Client) CancelTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "cancel", EmptyRequest{})
}

// ResolvingTask (operator) moves a COMPLETED task to RESOLVING before it is deleted.
func (c *Client) ResolvingTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "resolve", EmptyRequest{})
}

// DeleteTask deletes a RESOLVING task, or with force (brain) a COMPLETED one.
func (c *Client) DeleteTask(ctx context.Context, taskGuid string, force bool) error {
	r := request{method: http.MethodDelete, path: "/v1/tasks/" + seg(taskGuid)}
	if force {
		r.query = url.Values{"force": {"true"}}
	}
	return c.do(ctx, r, nil)
}

// UnresolveTask (brain) moves a RESOLVING task back to COMPLETED.
func (c *Client) UnresolveTask(ctx context.Context, taskGuid string) (*models.Task, error) {
	return c.taskAction(ctx, taskGuid, "unresolve", EmptyRequest{})
}

// ---- Cells ----

// Heartbeat (cell) announces presence under a lease of ttl (0 = the server's default).
// Errors: InvalidRecord, Forbidden (another cell).
func (c *Client) Heartbeat(ctx context.Context, presence *models.CellPresence, ttl time.Duration) error {
	r := request{method: http.MethodPut, path: "/v1/cells/" + seg(presence.CellID) + "/presence", body: presence, lease: true}
	if ttl > 0 {
		r.query = url.Values{"ttl_ms": {strconv.FormatInt(msDuration(ttl), 10)}}
	}
	return c.do(ctx, r, nil)
}

// Cell returns one present cell. Errors: NotFound.
func (c *Client) Cell(ctx context.Context, cellID string) (*models.CellPresence, error) {
	var out models.CellPresence
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cells/" + seg(cellID)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Cells lists present cells and the read revision.
func (c *Client) Cells(ctx context.Context) ([]*models.CellPresence, int64, error) {
	var out CellsResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/cells"}, &out); err != nil {
		return nil, 0, err
	}
	return out.Cells, out.Revision, nil
}

// RemoveCell removes a cell's presence at once. Errors: NotFound, Forbidden.
func (c *Client) RemoveCell(ctx context.Context, cellID string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/v1/cells/" + seg(cellID)}, nil)
}

// DrainCell (operator) asks a present cell to drain and returns its presence, now draining.
// Errors: NotFound (the cell is not present), Forbidden.
func (c *Client) DrainCell(ctx context.Context, cellID string) (*models.CellPresence, error) {
	var out models.CellPresence
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/cells/" + seg(cellID) + "/drain", body: EmptyRequest{}}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

var _ store.CellDrainer = (*Client)(nil)

// ---- Domains ----

// UpsertDomain (operator) marks name fresh for ttl (0 = forever), rounded down to seconds.
func (c *Client) UpsertDomain(ctx context.Context, name string, ttl time.Duration) error {
	return c.do(ctx, request{method: http.MethodPut, path: "/v1/domains/" + seg(name),
		body: DomainRequest{TTLSeconds: int64(ttl / time.Second)}}, nil)
}

// Domains lists fresh domains.
func (c *Client) Domains(ctx context.Context) ([]*models.Domain, error) {
	var out DomainsResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/domains"}, &out); err != nil {
		return nil, err
	}
	return out.Domains, nil
}

// ---- Locks ----

// AcquireLock takes or renews name for owner for ttl. Errors: LockHeld.
func (c *Client) AcquireLock(ctx context.Context, name, owner string, ttl time.Duration) error {
	return c.do(ctx, request{method: http.MethodPut, path: "/v1/locks/" + seg(name),
		body: LockRequest{Owner: owner, TTLMs: msDuration(ttl)}, lease: true}, nil)
}

// ReleaseLock releases name if owner holds it.
func (c *Client) ReleaseLock(ctx context.Context, name, owner string) error {
	return c.do(ctx, request{method: http.MethodDelete, path: "/v1/locks/" + seg(name),
		query: url.Values{"owner": {owner}}}, nil)
}

// LockOwner returns the holder of name, "" when free.
func (c *Client) LockOwner(ctx context.Context, name string) (string, error) {
	var out LockResponse
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/locks/" + seg(name)}, &out); err != nil {
		return "", err
	}
	return out.Owner, nil
}
