package command

import (
	"fmt"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-run/trellis/bbs/client"
	"github.com/trellis-run/trellis/bbs/models"
	"github.com/trellis-run/trellis/bbs/store"
)

func init() { register(newTaskCommand) }

func newTaskCommand() *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Run and inspect one-off tasks",
	}
	addClientFlags(cmd, &f)
	cmd.AddCommand(newTaskCreate(&f), newTaskList(&f), newTaskGet(&f), newTaskCancel(&f), newTaskResolve(&f))
	return cmd
}

func newTaskCreate(f *clientFlags) *cobra.Command {
	return createCommand(f, "Desire a task from a JSON document (runs at most once)",
		"  trellis task create -f examples/task-hello.json",
		(*client.Client).DesireTask,
		func(t *models.Task) string { return fmt.Sprintf("created task %s (%s)", t.TaskGuid, t.State) })
}

func newTaskList(f *clientFlags) *cobra.Command {
	var domain, cell string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tasks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			tasks, _, err := c.Tasks(cmd.Context(), store.TaskFilter{Domain: domain, CellID: cell})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), tasks)
			}
			sort.Slice(tasks, func(i, j int) bool { return tasks[i].CreatedAt < tasks[j].CreatedAt })
			now := time.Now()
			t := newTable(cmd.OutOrStdout(), "TASK GUID", "DOMAIN", "STATE", "CELL", "AGE", "RESULT")
			for _, task := range tasks {
				t.row(task.TaskGuid, task.Domain, task.State, task.CellID, age(task.CreatedAt, now), taskOutcome(task))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "only this domain")
	cmd.Flags().StringVar(&cell, "cell", "", "only tasks on this cell")
	return cmd
}

// taskOutcome is a one-line summary of how a task ended (or why it waits).
func taskOutcome(t *models.Task) string {
	switch {
	case t.Failed:
		return "failed: " + t.FailureReason
	case t.State == models.TaskStateCompleted || t.State == models.TaskStateResolving:
		return "succeeded"
	case t.PlacementError != "":
		return t.PlacementError
	}
	return ""
}

func newTaskGet(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get TASK_GUID",
		Short: "Show a task, with its result once completed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			task, err := c.Task(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), task)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "task guid   %s\ndomain      %s\nrootfs      %s\nstate       %s\n", task.TaskGuid, task.Domain, task.RootFS, task.State)
			if task.CellID != "" {
				fmt.Fprintf(out, "cell        %s\n", task.CellID)
			}
			if o := taskOutcome(task); o != "" {
				fmt.Fprintf(out, "outcome     %s\n", o)
			}
			if task.RejectionCount > 0 {
				fmt.Fprintf(out, "rejections  %d (%s)\n", task.RejectionCount, task.RejectionReason)
			}
			if task.Result != "" {
				fmt.Fprintf(out, "result      %s\n", task.Result)
			}
			return nil
		},
	}
}

func newTaskCancel(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel TASK_GUID",
		Short: "Cancel a pending or running task (it completes as failed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			task, err := c.CancelTask(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), task)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelled task %s\n", task.TaskGuid)
			return nil
		},
	}
}

func newTaskResolve(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "resolve TASK_GUID",
		Short: "Take a completed task's result and delete the task",
		Long: `Resolve a completed task: mark it RESOLVING, print its outcome and result, then delete it.
A task is resolved once; resolving a task that has not completed fails with a conflict.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.connect()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			task, err := c.ResolvingTask(ctx, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteTask(ctx, args[0], false); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), task)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "resolved task %s: %s\n", task.TaskGuid, taskOutcome(task))
			if task.Result != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "result: %s\n", task.Result)
			}
			return nil
		},
	}
}
