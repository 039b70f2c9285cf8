// Package client is the Go client of the BBS HTTP API (docs/api.md). *Client implements
// store.Interface, so the brain, the cell agent and the simulator can program against the same
// contract whether they talk to etcd directly or to a BBS over HTTPS.
//
// Errors returned by the server keep their class: models.IsNotFound, models.IsConflict and the
// other helpers work on them, and the server's message is kept (see *APIError). A request the
// server could not parse ("InvalidRequest", 400) satisfies models.IsInvalidRecord.
//
// Usage:
//
//	cfg, err := client.LoadConfig(client.DefaultConfigPath()) // written by `trellis dev`
//	c, err := client.New(cfg)
//	lrp, err := c.DesiredLRP(ctx, "my-app")
//
// Events follows the server-sent event stream and reconnects by itself with Last-Event-ID, so
// a dropped connection loses and repeats nothing.
package client
