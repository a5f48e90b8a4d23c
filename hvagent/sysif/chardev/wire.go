package chardev

import "github.com/ooblab/ooblab/internal/vmcodec"

// QEMU72Caps is what QEMU 7.2 announces: power, reset, irq, nmi, attn,
// graceful shutdown.
const QEMU72Caps = vmcodec.CapPower | vmcodec.CapReset | vmcodec.CapIRQ |
	vmcodec.CapNMI | vmcodec.CapAttn | vmcodec.CapGracefulShutdown

// minResponse is the shortest response from a BMC: seq, netfn, cmd,
// completion code, checksum (a request may lack the completion code).
const minResponse = 5
