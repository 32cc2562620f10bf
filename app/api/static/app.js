// Start-up: the OpenAPI document first (it holds the form's choices, and it answers 401 when the
// service has tokens, which is when the page asks for one), then the form and the task list.

import { api, ApiError, hasToken, onUnauthorized, useToken } from "./api.js";
import { setupForm } from "./form.js";
import { TaskList } from "./tasks.js";

const $ = (id) => document.getElementById(id);
let asking = null;

// Shows the token form until the API accepts a token; resolves with the OpenAPI document.
function askToken(message) {
  if (asking) return asking;
  $("token-section").hidden = false;
  $("token-error").textContent = message;
  $("token").focus();
  asking = new Promise((resolve) => {
    const form = $("token-form");
    const submit = async (event) => {
      event.preventDefault();
      useToken($("token").value.trim(), false);
      try {
        const openapi = await api("/api/openapi.json");
        useToken($("token").value.trim(), true);
        $("token").value = "";
        $("token-section").hidden = true;
        form.removeEventListener("submit", submit);
        asking = null;
        resolve(openapi);
      } catch (error) {
        useToken(null);
        $("token-error").textContent = `Token refused: ${error.message}`;
        $("token").select();
      }
    };
    form.addEventListener("submit", submit);
  });
  return asking;
}

// Who the token is, shown in the header; without tokens there is nobody to name.
async function showSignedIn(list) {
  if (!hasToken()) return;
  const me = await api("/api/me");
  list.viewer = me;
  $("who").textContent = `Signed in as ${me.name} (${me.role})`;
  $("signed-in").hidden = false;
}

$("sign-out").addEventListener("click", () => {
  useToken(null);
  window.location.reload();
});

async function start() {
  let openapi;
  try {
    openapi = await api("/api/openapi.json");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      $("notice").textContent = `The service did not answer: ${error.message}`;
      return;
    }
    useToken(null);
    openapi = await askToken(error.message);
  }
  const list = new TaskList(openapi);
  setupForm(openapi, () => list.showNew());
  // A token that stops working (changed on the service) is asked for again, once.
  onUnauthorized((error) => {
    if (asking) return;
    useToken(null);
    $("signed-in").hidden = true;
    askToken(error.message).then(() => showSignedIn(list).then(() => list.resume()));
  });
  await showSignedIn(list);
  $("submit-section").hidden = false;
  $("tasks-section").hidden = false;
  await list.load();
}

start();
