// Command hello shows the basic flow: lease → execute echo → get the
// receipt → verify it offline against the gate's receipt keys.
//
//	go run ./sdk/examples/hello                       # default socket
//	go run ./sdk/examples/hello -socket /path/gate.sock
//	LATCHGATE_URL=http://localhost:3000 go run ./sdk/examples/hello
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/latchgate/latchgate/sdk"
)

func main() {
	socket := flag.String("socket", "", "gate client socket (default: LATCHGATE_URL or the default sockets)")
	flag.Parse()
	if err := run(*socket); err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

func run(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	opts := []sdk.Option{sdk.WithAgentID("hello-example"), sdk.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))}
	if socket != "" {
		opts = append(opts, sdk.WithSocket(socket))
	}
	client, err := sdk.New(opts...)
	if err != nil {
		return err
	}
	defer client.Close()

	// Lazy connect: the first Execute opens the lease.
	res, err := client.Execute(ctx, "echo", map[string]any{"message": "hello, gate"})
	if err != nil {
		return err
	}
	fmt.Printf("output:     %s\n", res.Output)
	fmt.Printf("receipt_id: %s\n", res.ReceiptID)
	fmt.Printf("trace_id:   %s\n", res.TraceID)

	receipt, err := client.GetReceipt(ctx, res.ReceiptID)
	if err != nil {
		return err
	}
	if err := client.VerifyReceipt(ctx, receipt); err != nil {
		return fmt.Errorf("receipt does not verify: %w", err)
	}
	fmt.Printf("receipt seq %d verified (hash %s, key %s), fully successful: %v\n",
		receipt.Seq, receipt.Hash, receipt.KeyID, receipt.IsFullySuccessful())
	return nil
}
