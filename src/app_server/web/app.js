// imctl's built-in web client: the Wildfire-style web QR login, then chat over
// imctl's WebSocket protocol (docs/PROTOCOL.md). Only public APIs are used, so
// these modules double as an example to copy. Everything a peer controls
// (text, names, URLs) is inserted with textContent or checked attributes,
// never HTML. This entry wires the modules together and starts the page.

import { $ } from "./dom.js";
import { store } from "./device.js";
import { inspector } from "./inspector.js";
import { login } from "./login.js";
import { phone } from "./phone.js";
import { chat } from "./chat.js";

inspector.init();
phone.init();
chat.init();
login.onLogin = (creds) => chat.start(creds);
$("new-qr").addEventListener("click", () => login.start());
const saved = store.get("creds");
if (saved && saved.imToken) chat.start(saved);
else login.start();
