package redfish

import (
	"context"
	"net/http"
	"slices"
)

// QueueBackend is what a Backend with the OOB-I queues adds: the queue
// commands of the LAN side, run as user at role exactly as the IPMI OEM
// commands are (same records, reader binding to the user, journal): data
// and resp are the commands' request and response bytes, cc their
// completion code.
type QueueBackend interface {
	QueueCommand(ctx context.Context, cmd uint8, user string, role Role, data []byte) (resp []byte, cc uint8)
}

// queueCommands are the OEM queue commands a VMS sends over the LAN
// (docs/oob-i.md): Write Queue 1, Read Queue 2, Get Queue Status, Read
// Queue 2 For. The host's commands (Read Queue 1, Write Queue 2, Read
// Queue 1 Window) are not served here, as they are not on the LAN.
var queueCommands = []int{0x01, 0x04, 0x05, 0x06}

const queueActionURI = managerURI + "/Actions/Oem/OoblabManager.QueueCommand"

// queueRequest is the body of the QueueCommand action: the OEM command
// number and its request data (IANA first, as over IPMI), base64 in JSON.
type queueRequest struct {
	Command *int
	Data    []byte
}

func (s *Service) postQueueCommand(w http.ResponseWriter, r *http.Request, c *caller) {
	qb, ok := s.backend.(QueueBackend)
	if !ok {
		writeError(w, newError(http.StatusNotFound, "ActionNotSupported", "The action OoblabManager.QueueCommand is not supported by the resource.", "OoblabManager.QueueCommand"))
		return
	}
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req queueRequest
	if aerr := decodeJSON(body, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.Command == nil {
		writeError(w, newError(http.StatusBadRequest, "ActionParameterMissing",
			"The action OoblabManager.QueueCommand requires the parameter Command to be present in the request body.",
			"OoblabManager.QueueCommand", "Command"))
		return
	}
	if !slices.Contains(queueCommands, *req.Command) {
		writeError(w, newError(http.StatusBadRequest, "ActionParameterValueNotInList",
			"The value '"+itoa(*req.Command)+"' for the parameter Command in the action OoblabManager.QueueCommand is not in the list of acceptable values (1, 4, 5, 6).",
			itoa(*req.Command), "Command", "OoblabManager.QueueCommand"))
		return
	}
	resp, cc := qb.QueueCommand(r.Context(), uint8(*req.Command), c.user, c.role, req.Data)
	if resp == nil {
		resp = []byte{}
	}
	writeJSON(w, r, http.StatusOK, map[string]any{
		"@odata.type":    "#OoblabQueueCommandResponse.v1_0_0.OoblabQueueCommandResponse",
		"Command":        *req.Command,
		"CompletionCode": cc,
		"Data":           resp,
	})
}
