package isolationwindows

import (
	"log/slog"
)

func platformDeps() deps {
	return deps{
		process: newJobDriver,
		container: func(cfg Config, log *slog.Logger) (driver, error) {
			return newHCSDriver(cfg, log, newHcsshimAPI(), hcnAPI{}), nil
		},
		portFree: portFree,
		capacity: hostCapacity,
	}
}
