#!/usr/bin/python3
"""Drives a bmcsim Redfish service with python3-sushy (Debian).

Usage: sushy_client.py URL CAFILE USER; the password comes in the
environment (REDFISH_PASSWORD), never in argv. Prints one "ok <step>" line
per step and exits non-zero at the first failure. sushy 4.3 has no classes
for LogService or ManagerAccount: those steps GET through sushy's own
authenticated connector.
"""
import json
import os
import sys
import threading

import requests
import sushy
from sushy import auth


def main():
    url, cafile, user = sys.argv[1:4]
    pw = os.environ["REDFISH_PASSWORD"]

    # Basic authentication.
    basic = sushy.Sushy(url, verify=cafile, auth=auth.BasicAuth(user, pw))
    assert basic.get_system("/redfish/v1/Systems/1").identity == "1"
    print("ok basic")

    # Session authentication (X-Auth-Token).
    s = sushy.Sushy(url, verify=cafile, auth=auth.SessionAuth(user, pw))
    token = s._auth.get_session_key()
    assert token, "no session token"
    print("ok session")

    system = s.get_system("/redfish/v1/Systems/1")
    print("ok power_state", system.power_state.value)

    allowed = system.get_allowed_reset_system_values()
    for rt in ("ForceOff", "On", "GracefulShutdown", "ForceRestart", "PowerCycle", "Nmi"):
        assert sushy.ResetType(rt) in allowed, (rt, allowed)
        system.reset_system(sushy.ResetType(rt))
        print("ok reset", rt)

    system.set_system_boot_options(sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE,
                                   mode=sushy.BootSourceOverrideMode.UEFI)
    system.refresh()
    b = system.boot
    assert (b.target, b.enabled, b.mode) == (sushy.BootSource.PXE, sushy.BootSourceOverrideEnabled.ONCE,
                                             sushy.BootSourceOverrideMode.UEFI), (b.target, b.enabled, b.mode)
    print("ok boot", b.target.value, b.enabled.value, b.mode.value)

    mgr = s.get_manager("/redfish/v1/Managers/1")
    assert mgr.firmware_version, "no firmware version"
    print("ok manager", mgr.manager_type.value, mgr.firmware_version)

    entries = s._conn.get("/redfish/v1/Managers/1/LogServices/SEL/Entries").json()["Members"]
    print("ok sel", len(entries), json.dumps([e["Message"] for e in entries]))

    accts = s._conn.get("/redfish/v1/AccountService/Accounts").json()["Members"]
    names = sorted(s._conn.get(a["@odata.id"]).json()["UserName"] for a in accts)
    print("ok accounts", ",".join(names))

    # Event service: SubmitTestEvent reaches an SSE stream.
    es = s.get_event_service()
    assert es.service_enabled
    sse_uri = s._conn.get("/redfish/v1/EventService").json()["ServerSentEventUri"]
    got = []
    ready = threading.Event()

    def listen():
        r = requests.get(url + sse_uri, headers={"X-Auth-Token": token}, verify=cafile, stream=True, timeout=10)
        for line in r.iter_lines(decode_unicode=True):
            ready.set()
            if line and line.startswith("data: "):
                got.append(json.loads(line[6:]))
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10), "SSE stream did not open"
    es.submit_test_event("1", "2026-01-01T00:00:00Z", "Alert", "sushy test event", [],
                         "ResourceEvent.1.3.ResourceChanged", "/redfish/v1/Systems/1", "OK")
    t.join(10)
    assert got and got[0]["Events"][0]["Message"] == "sushy test event", got
    print("ok event", got[0]["Events"][0]["MessageId"])

    s._auth.close()  # DELETE the session
    print("ok logout")


if __name__ == "__main__":
    main()
