package command

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/agent"
	"github.com/trellis-run/trellis/bbs/store"
)

func init() { register(newLogsCommand) }

func newLogsCommand() *cobra.Command {
	var f clientFlags
	var index int
	var follow, timestamps bool
	cmd := &cobra.Command{
		Use:   "logs PROCESS_GUID",
		Short: "Print the output of an LRP's instances, from the agents of the cells that run them",
		Long: `Print the captured stdout and stderr of an LRP's instances (and the health-check and agent
lines about them), each line prefixed with its source, instance index and stream:

  [APP/0] OUT listening on :8080

The cells are found from the instance records and the agents are reached on the API address they
announce, with the operator's certificate from the client config. With --follow new lines are
printed as they are written until interrupted.`,
		Example: `  trellis logs hello
  trellis logs hello --index 2 --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			actual, _, err := c.ActualLRPs(ctx, store.ActualLRPFilter{ProcessGuid: args[0]})
			if err != nil {
				return err
			}
			// Crashed instances no longer name their cell: then ask every cell.
			addrs, err := cellAddresses(ctx, c, actual, false)
			if err == nil && len(addrs) == 0 {
				addrs, err = cellAddresses(ctx, c, actual, true)
			}
			if err != nil {
				return err
			}
			if len(addrs) == 0 {
				return fmt.Errorf("no cell announces an agent API to ask for the logs of %s", args[0])
			}
			hc, err := agentHTTPClient(&f, 0)
			if err != nil {
				return err
			}
			q := url.Values{"process_guid": {args[0]}}
			if index >= 0 {
				q.Set("index", strconv.Itoa(index))
			}
			if follow {
				q.Set("follow", "true")
			}
			return printLogs(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), hc, addrs, q, follow, timestamps)
		},
	}
	addClientFlags(cmd, &f)
	cmd.Flags().IntVar(&index, "index", -1, "only this instance index")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().BoolVar(&timestamps, "timestamps", false, "prefix each line with its time")
	return cmd
}

// printLogs reads the logs from every agent in addrs. Without follow the lines of all cells are
// printed in time order; with follow they are printed as they arrive. An agent that cannot be
// reached is reported on errOut and skipped.
func printLogs(ctx context.Context, out, errOut io.Writer, hc *http.Client, addrs map[string]string, q url.Values, follow, timestamps bool) error {
	var mu sync.Mutex
	var collected []agent.LogLine
	emit := func(l agent.LogLine) {
		mu.Lock()
		defer mu.Unlock()
		if follow {
			fmt.Fprintln(out, formatLogLine(l, timestamps))
		} else {
			collected = append(collected, l)
		}
	}
	cells := make([]string, 0, len(addrs))
	for cell := range addrs {
		cells = append(cells, cell)
	}
	sort.Strings(cells)
	var wg sync.WaitGroup
	for _, cell := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := streamLogs(ctx, hc, addrs[cell], q, emit); err != nil && ctx.Err() == nil {
				mu.Lock()
				fmt.Fprintf(errOut, "trellis: logs from cell %s (%s): %v\n", cell, addrs[cell], err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.SliceStable(collected, func(i, j int) bool { return collected[i].Time.Before(collected[j].Time) })
	for _, l := range collected {
		fmt.Fprintln(out, formatLogLine(l, timestamps))
	}
	return nil
}

// streamLogs reads one agent's GET /v1/logs answer line by line.
func streamLogs(ctx context.Context, hc *http.Client, addr string, q url.Values, fn func(agent.LogLine)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l agent.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("malformed log line: %w", err)
		}
		fn(l)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// formatLogLine renders "[APP/0] OUT text", optionally after the line's time.
func formatLogLine(l agent.LogLine, timestamps bool) string {
	label := "[" + l.Source
	if l.Index >= 0 {
		label += "/" + strconv.Itoa(l.Index)
	}
	label += "]"
	s := label + " " + l.Stream + " " + l.Text
	if timestamps {
		s = l.Time.UTC().Format(time.RFC3339Nano) + " " + s
	}
	return s
}
