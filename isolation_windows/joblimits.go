package isolationwindows

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/trellis-run/trellis/isolation"
)

// Job object constants x/sys/windows does not define.
const (
	jobObjectCPURateControlEnable  = 0x1
	jobObjectCPURateControlHardCap = 0x4
	// jobObjectMsgEndOfProcessTime .. are the completion-port messages of a job.
	jobObjectMsgActiveProcessZero = 4
	jobObjectMsgJobMemoryLimit    = 10
	// procThreadAttributeJobList is PROC_THREAD_ATTRIBUTE_JOB_LIST (Windows 10+).
	procThreadAttributeJobList = 0x2000D
	// cpuRateFull is 100% of every host CPU in JOBOBJECT_CPU_RATE_CONTROL_INFORMATION units.
	cpuRateFull = 10000
)

// jobCPURateControlInformation is JOBOBJECT_CPU_RATE_CONTROL_INFORMATION: ControlFlags, then
// a union whose first member, CpuRate, is the hard cap in 1/100 of a percent of all CPUs.
type jobCPURateControlInformation struct {
	ControlFlags uint32
	CPURate      uint32
}

// jobBasicAccountingInformation is JOBOBJECT_BASIC_ACCOUNTING_INFORMATION (times in 100 ns).
type jobBasicAccountingInformation struct {
	TotalUserTime             int64
	TotalKernelTime           int64
	ThisPeriodTotalUserTime   int64
	ThisPeriodTotalKernelTime int64
	TotalPageFaultCount       uint32
	TotalProcesses            uint32
	ActiveProcesses           uint32
	TotalTerminatedProcesses  uint32
}

// ioCounters is IO_COUNTERS.
type ioCounters struct {
	ReadOperationCount  uint64
	WriteOperationCount uint64
	OtherOperationCount uint64
	ReadTransferCount   uint64
	WriteTransferCount  uint64
	OtherTransferCount  uint64
}

// jobBasicAndIOAccountingInformation is JOBOBJECT_BASIC_AND_IO_ACCOUNTING_INFORMATION.
type jobBasicAndIOAccountingInformation struct {
	BasicInfo jobBasicAccountingInformation
	IoInfo    ioCounters
}

// jobLimits is what a container's isolation.Limits become on its job object.
type jobLimits struct {
	// LimitFlags are JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags.
	LimitFlags uint32
	// JobMemoryLimit is JOBOBJECT_EXTENDED_LIMIT_INFORMATION.JobMemoryLimit (bytes of
	// committed memory of all the job's processes together).
	JobMemoryLimit uint64
	// ActiveProcessLimit bounds the processes alive in the job at once.
	ActiveProcessLimit uint32
	// CPURate is the hard cap (1..10000) when non-zero.
	CPURate uint32
}

// JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags bits (as in x/sys/windows).
const (
	jobLimitActiveProcess           = 0x00000008
	jobLimitJobMemory               = 0x00000200
	jobLimitDieOnUnhandledException = 0x00000400
	jobLimitKillOnJobClose          = 0x00002000
)

// jobLimitsFor translates isolation.Limits into job object limits:
//
//   - MemoryBytes → JOB_OBJECT_LIMIT_JOB_MEMORY with JobMemoryLimit (all processes' commit
//     together, as a memory cgroup bounds a Linux container).
//   - Pids → JOB_OBJECT_LIMIT_ACTIVE_PROCESS with ActiveProcessLimit (capped at 2^32-1).
//   - CPUWeight → a CPU rate hard cap (cpuRateFor).
//   - always JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE and JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION
//     (no error dialog keeps a crashed process alive), and no breakaway: every child
//     stays in the job.
func jobLimitsFor(l isolation.Limits) jobLimits {
	j := jobLimits{LimitFlags: jobLimitKillOnJobClose | jobLimitDieOnUnhandledException}
	if l.MemoryBytes != 0 {
		j.LimitFlags |= jobLimitJobMemory
		j.JobMemoryLimit = l.MemoryBytes
	}
	if l.Pids != 0 {
		j.LimitFlags |= jobLimitActiveProcess
		j.ActiveProcessLimit = uint32(min(l.Pids, 1<<32-1))
	}
	j.CPURate = cpuRateFor(l.CPUWeight)
	return j
}

// cpuRateFor maps Diego's cpu_weight (1-100) to a job's CPU rate hard cap: weight w caps
// the container at w% of the host's total CPU time (w × 100 in 1/100 % units). Weight 0
// (unset) and 100 set no cap. Unlike a cgroup weight, the cap holds even on an idle host:
// Windows job objects offer either a hard cap or a 1-9 relative weight, and only the cap is
// measurable and stable when containers come and go; operators size cpu_weight as "share of
// the machine" accordingly (docs/isolation-windows.md).
func cpuRateFor(weight uint32) uint32 {
	if weight == 0 || weight >= 100 {
		return 0
	}
	return weight * cpuRateFull / 100
}

// jobName is the name of a container's job object: unique per state dir and handle, so that
// two Backends over different state dirs never share a job, and a new Backend over the same
// state dir reopens it.
func jobName(stateDir, handle string) string {
	sum := sha256.Sum256([]byte(stateDir))
	return `Local\trellis-` + hex.EncodeToString(sum[:6]) + "-" + handle
}

// jobMetrics turns job accounting into isolation.Metrics: CPU is user plus kernel time of
// every process the job ever held (100 ns units), memory the job's peak committed memory
// (PeakJobMemoryUsed; a job reports no current total), pids its active processes.
func jobMetrics(acct jobBasicAndIOAccountingInformation, peakJobMemory uint64) isolation.Metrics {
	return isolation.Metrics{
		MemoryBytes: peakJobMemory,
		CPUNanos:    uint64(acct.BasicInfo.TotalUserTime+acct.BasicInfo.TotalKernelTime) * 100,
		Pids:        uint64(acct.BasicInfo.ActiveProcesses),
	}
}
