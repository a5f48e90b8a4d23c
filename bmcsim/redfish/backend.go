package redfish

import (
	"context"
	"errors"
	"time"
)

// Backend is what the Redfish service needs from its BMC: the same users,
// power driver, boot flags and SEL the IPMI side serves (bmcsim/app
// implements it over bmcsim/bmc). Tests give a fake.
type Backend interface {
	// Accounts lists the BMC's users, in user ID order.
	Accounts() []Account
	// Authenticate checks name's password (constant time); ok is false for
	// an unknown or disabled user and for a wrong password.
	Authenticate(name, password string) (a Account, ok bool)
	// SetPassword sets the password of the user with id.
	SetPassword(id, password string) error

	// PowerOn reports whether the managed system runs.
	PowerOn(ctx context.Context) bool
	// Reset carries out rt through the power driver and returns once the
	// driver acted (or failed).
	Reset(ctx context.Context, rt ResetType) error

	// Boot is the boot override, shared with IPMI's boot flags.
	Boot() Boot
	SetBoot(Boot) error

	// SEL returns the SEL records, oldest first; ClearSEL erases them.
	SEL() [][16]byte
	ClearSEL() error

	// Info describes the BMC and its managed system.
	Info(ctx context.Context) Info

	// Sensors reads the BMC's sensors (the ones ipmitool sdr shows), in
	// sensor number order; PowerStats the power statistics (DCMI).
	Sensors() []Sensor
	PowerStats() PowerStats
}

// Sensor is one sensor reading.
type Sensor struct {
	ID          string // e.g. "CPUTemp"
	Name        string // the SDR's name, e.g. "CPU Temp"
	ReadingType string // Temperature, Rotational, Power, Voltage
	Units       string // Cel, RPM, W, V
	Reading     float64
	Available   bool
	// Thresholds by Redfish name (LowerCaution, LowerCritical, LowerFatal,
	// UpperCaution, UpperCritical, UpperFatal), only those the sensor has;
	// Asserted those crossed now.
	Thresholds map[string]float64
	Asserted   []string
	Context    string // PhysicalContext: CPU, Intake, Fan, PowerSupply, VoltageRegulator
}

// PowerStats is the input power now and over the statistics period.
type PowerStats struct {
	Now, Min, Max, Avg float64
	Period             time.Duration
}

// LoginBook is what a Backend that keeps its own login accounting (the
// BMC's, shared with RMCP+) adds: BeginLogin says how long a login of user
// from ip must wait (> 0: refuse it unchecked), else counts it
// provisionally and returns the function that settles it.
type LoginBook interface {
	BeginLogin(user, ip string) (wait time.Duration, end func(ok bool))
}

// Account is one BMC user as Redfish sees it.
type Account struct {
	ID       string // the IPMI user ID, decimal
	UserName string
	Role     Role
	Enabled  bool
}

// Role is a Redfish role, mapped from an IPMI privilege level.
type Role string

// The roles of the predefined Redfish role set, from the IPMI levels
// ADMINISTRATOR, OPERATOR and USER.
const (
	RoleAdministrator Role = "Administrator"
	RoleOperator      Role = "Operator"
	RoleReadOnly      Role = "ReadOnly"
)

// rank orders roles: a route needing role r admits every role ranked at
// least as high.
func (r Role) rank() int {
	switch r {
	case RoleAdministrator:
		return 3
	case RoleOperator:
		return 2
	case RoleReadOnly:
		return 1
	}
	return 0
}

// ResetType is a ComputerSystem.Reset ResetType.
type ResetType string

// The reset types bmcsim honours (the power driver's operations).
const (
	ResetOn               ResetType = "On"
	ResetForceOff         ResetType = "ForceOff"
	ResetGracefulShutdown ResetType = "GracefulShutdown"
	ResetForceRestart     ResetType = "ForceRestart"
	ResetPowerCycle       ResetType = "PowerCycle"
	ResetNmi              ResetType = "Nmi"
)

// ResetTypes lists them in the order of ResetType@Redfish.AllowableValues.
var ResetTypes = []ResetType{ResetOn, ResetForceOff, ResetGracefulShutdown, ResetForceRestart, ResetPowerCycle, ResetNmi}

// ErrNotSupported is returned by a Backend for an operation its hardware
// cannot do (e.g. an NMI without a system interface).
var ErrNotSupported = errors.New("not supported by this system")

// Boot is the boot source override.
type Boot struct {
	Target  string // BootSourceOverrideTarget: one of BootTargets
	Enabled string // BootSourceOverrideEnabled: Disabled, Once or Continuous
	Mode    string // BootSourceOverrideMode: UEFI or Legacy
}

// BootTargets are the override targets that map onto IPMI boot devices.
var BootTargets = []string{"None", "Pxe", "Hdd", "Cd", "Diags", "BiosSetup", "Floppy"}

// BootEnabledValues and BootModes are the other properties' values.
var (
	BootEnabledValues = []string{"Disabled", "Once", "Continuous"}
	BootModes         = []string{"UEFI", "Legacy"}
)

// Info describes the BMC and its system.
type Info struct {
	Name            string // the BMC's name
	UUID            string
	FirmwareVersion string
	IPMIPort        int
	SerialConsole   bool // SOL configured
	IANA            uint32
	Processors      int     // 0: unknown
	MemoryGiB       float64 // 0: unknown
	SELCapacity     int
}
