package brain

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"time"

	"github.com/trellis-run/trellis/brain/auction"
	"github.com/trellis-run/trellis/brain/converge"
)

// ErrInvalidConfig is returned for an unusable Config.
var ErrInvalidConfig = errors.New("invalid brain configuration")

// Defaults of Config.
const (
	DefaultLockName          = "brain"
	DefaultLockTTL           = 5 * time.Second
	DefaultConvergeInterval  = 30 * time.Second
	DefaultConvergeDebounce  = 100 * time.Millisecond
	DefaultCallbackTimeout   = 10 * time.Second
	DefaultCallbackAttempts  = 3
	DefaultApplyConcurrency  = 32
	DefaultBatchConcurrency  = 4
	DefaultResyncDelay       = time.Second
	minLockTTL               = time.Second
	lockNamePatternForHumans = "[a-zA-Z0-9_-]{1,128}"
)

var lockNamePattern = regexp.MustCompile(`^` + lockNamePatternForHumans + `$`)

// Config configures a Brain. Start from DefaultConfig.
type Config struct {
	// OwnerID names this brain in the lock; every brain of a cluster needs its own. Default
	// "<hostname>-<pid>".
	OwnerID string `json:"owner_id"`
	// LockName is the BBS lock the brains contend for. Default "brain".
	LockName string `json:"lock_name"`
	// LockTTL bounds how long the brains go without a leader when the leader dies: the lease
	// the brain takes is shorter (whole seconds, see leaseTTL), renewed every third of it, so
	// that a standby takes over within LockTTL of the leader's death. At least 1 s (the BBS keeps locks
	// in whole seconds). Default 5 s.
	LockTTL time.Duration `json:"lock_ttl"`
	// LockRetryInterval is how often a standby tries to take the lock. Default LockTTL/10.
	LockRetryInterval time.Duration `json:"lock_retry_interval"`

	// ConvergeInterval is the period of the converger's full sweep. Default 30 s.
	ConvergeInterval time.Duration `json:"converge_interval"`
	// ConvergeDebounce is how long the converger waits after the first relevant event (a crash,
	// a cell disappearing, a desired LRP change) before it plans, so that a burst of events is
	// planned once. Default 100 ms.
	ConvergeDebounce time.Duration `json:"converge_debounce"`
	// Converge holds the converger's time limits; zero fields mean converge's defaults.
	Converge converge.Options `json:"converge"`
	// Auction tunes placement (spread or bin-pack, the starting-container weight).
	Auction auction.Options `json:"auction"`

	// ApplyConcurrency bounds the BBS writes one auction or one convergence issues at a time.
	// Default 32.
	ApplyConcurrency int `json:"apply_concurrency"`
	// BatchConcurrency bounds the batch requests of instance writes (100 writes each) the
	// leader has in flight. A few keep the work of a cell loss or a drain from reaching every
	// cell at once, which makes each BBS request wait longer without finishing sooner. 0 means
	// the default, 4.
	BatchConcurrency int `json:"batch_concurrency"`
	// ResyncDelay is the pause before the leader re-reads the BBS after its event stream
	// failed. Default 1 s.
	ResyncDelay time.Duration `json:"resync_delay"`

	// CallbackTimeout bounds one POST of a task's completion callback. Default 10 s.
	CallbackTimeout time.Duration `json:"callback_timeout"`
	// CallbackAttempts is how many times a callback is POSTed before the brain leaves the task
	// to a later convergence. Default 3.
	CallbackAttempts int `json:"callback_attempts"`
	// CallbackClient sends completion callbacks. Nil means a client with CallbackTimeout.
	CallbackClient *http.Client `json:"-"`

	// Clock tells time for the converger (Plan's now, scheduled restarts and time limits).
	// Nil means the system clock; tests drive the crash back-off with a fake one.
	Clock Clock `json:"-"`
}

// DefaultConfig returns the defaults above, with OwnerID from the host name and process id.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "brain"
	}
	return Config{
		OwnerID:           host + "-" + strconv.Itoa(os.Getpid()),
		LockName:          DefaultLockName,
		LockTTL:           DefaultLockTTL,
		LockRetryInterval: DefaultLockTTL / 10,
		ConvergeInterval:  DefaultConvergeInterval,
		ConvergeDebounce:  DefaultConvergeDebounce,
		Converge:          converge.DefaultOptions(),
		Auction:           auction.DefaultOptions(),
		ApplyConcurrency:  DefaultApplyConcurrency,
		BatchConcurrency:  DefaultBatchConcurrency,
		ResyncDelay:       DefaultResyncDelay,
		CallbackTimeout:   DefaultCallbackTimeout,
		CallbackAttempts:  DefaultCallbackAttempts,
	}
}

// Validate reports the first problem with c. Errors: ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.OwnerID == "":
		return bad("owner_id is required")
	case !lockNamePattern.MatchString(c.LockName):
		return bad("lock_name %q must match %s", c.LockName, lockNamePatternForHumans)
	case c.LockTTL < minLockTTL:
		return bad("lock_ttl %v must be at least %v", c.LockTTL, minLockTTL)
	case c.LockRetryInterval <= 0 || c.LockRetryInterval >= c.LockTTL:
		return bad("lock_retry_interval %v must be positive and shorter than lock_ttl %v", c.LockRetryInterval, c.LockTTL)
	case c.ConvergeInterval <= 0:
		return bad("converge_interval %v must be positive", c.ConvergeInterval)
	case c.ConvergeDebounce < 0:
		return bad("converge_debounce %v must not be negative", c.ConvergeDebounce)
	case c.ApplyConcurrency < 1:
		return bad("apply_concurrency %d must be at least 1", c.ApplyConcurrency)
	case c.BatchConcurrency < 0:
		return bad("batch_concurrency %d must not be negative (0 for the default %d)", c.BatchConcurrency, DefaultBatchConcurrency)
	case c.ResyncDelay <= 0:
		return bad("resync_delay %v must be positive", c.ResyncDelay)
	case c.CallbackTimeout <= 0:
		return bad("callback_timeout %v must be positive", c.CallbackTimeout)
	case c.CallbackAttempts < 1:
		return bad("callback_attempts %d must be at least 1", c.CallbackAttempts)
	}
	if err := c.Converge.Validate(); err != nil {
		return bad("converge: %v", err)
	}
	if err := c.Auction.Validate(); err != nil {
		return bad("auction: %v", err)
	}
	return nil
}

// leaseTTL is the lease the brain asks the BBS for. It is shorter than LockTTL by what a
// takeover costs after the lease expires (etcd looks for expired leases every half second, and
// a standby asks every LockRetryInterval), so that a standby leads within LockTTL of the
// leader's death. Whole seconds, as etcd grants leases; at least one.
func (c Config) leaseTTL() time.Duration {
	return max((c.LockTTL - 500*time.Millisecond - c.LockRetryInterval).Truncate(time.Second), time.Second)
}

// renewInterval is how often the leader renews the lock.
func (c Config) renewInterval() time.Duration { return c.leaseTTL() / 3 }

// leaseMargin is how long before the lease could expire the leader gives up when it has not
// been able to renew: it stops placing while the lock is certainly still its own.
func (c Config) leaseMargin() time.Duration { return c.leaseTTL() / 5 }
