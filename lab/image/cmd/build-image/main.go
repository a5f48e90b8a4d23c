// Command build-image builds (or finds in the cache) the ooblab
// hypervisor-host guest image and prints where its artifacts are.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ooblab/ooblab/lab/image"
)

func main() {
	force := flag.Bool("force", false, "rebuild even when cached")
	hvagent := flag.String("hvagent", "", "hvagent binary to copy into the image")
	cache := flag.String("cache", "", "cache folder (default: <user cache>/ooblab/images)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r := image.DefaultRecipe()
	r.HVAgent = *hvagent
	a, err := image.Build(ctx, r, image.Options{CacheDir: *cache, Force: *force}, log)
	if err != nil {
		log.Error("guest image build failed", "err", err)
		os.Exit(1)
	}
	fmt.Printf("OOBLAB_IMAGE_DIR=%s\nOOBLAB_KERNEL=%s\nOOBLAB_INITRD=%s\nOOBLAB_ROOT=%s\nOOBLAB_APPEND=%q\n",
		a.Dir, a.Kernel, a.Initrd, a.RootQCOW2, a.Append)
}
