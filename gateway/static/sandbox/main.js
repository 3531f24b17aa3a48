// The sandbox page: signs up (or resumes) a throwaway user, opens its two devices, and
// wires the columns, the figures and the guided scenarios. `window.sandbox` exposes the
// devices to tests and to the curious (try `await sandbox.a.token()` in the console).

import { DEVICES, forgetUser, openSandbox } from "./account.js";
import { DeviceView } from "./device-view.js";
import { $, h } from "./dom.js";
import { FiguresView } from "./figures.js";
import { Scenarios } from "./scenarios.js";

function setStatus(text, bad = false) {
  const el = $("#page-status");
  el.textContent = text;
  el.classList.toggle("error", bad);
}

async function startOver() {
  setStatus("starting over with a new sandbox user…");
  await Promise.all(Object.values(window.sandbox?.devices ?? {}).map((d) => d.close().catch(() => {})));
  await forgetUser();
  location.reload();
}

async function main() {
  $("#start-over").addEventListener("click", startOver);
  setStatus("signing up a sandbox user…");
  const { user, devices } = await openSandbox();
  const names = new Map(DEVICES.map((d) => [devices[d.key].deviceId, d.name.toLowerCase()]));
  const shared = { deviceName: (id) => names.get(id) ?? `device ${String(id).slice(0, 8)}` };
  const views = {};
  for (const spec of DEVICES) {
    views[spec.key] = new DeviceView($(`[data-device="${spec.key}"]`), devices[spec.key], spec, shared);
  }
  const figures = new FiguresView($("#figures"), devices);
  const scenarios = new Scenarios($("#scenarios"), views, figures);
  for (const d of Object.values(devices)) {
    d.on("signed_out", () => {
      setStatus("the server no longer knows this sandbox user: start over", true);
    });
  }
  window.sandbox = {
    user: user.email,
    spaceId: devices.a.personalSpaceId,
    devices,
    views,
    figures,
    scenarios,
    a: devices.a,
    b: devices.b,
  };
  $("#user").replaceChildren(h("code", {}, user.email));
  setStatus("ready");
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  setStatus(`the sandbox could not start: ${err.message}`, true);
  document.body.dataset.ready = "failed";
});
