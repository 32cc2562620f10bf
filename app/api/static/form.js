// The submit form. Its choices, defaults and limits come from the API's OpenAPI document, and
// the API checks the input: its error messages are shown next to the field they concern.

import { api, ApiError, resolve } from "./api.js";

const URL_CODES = new Set(["invalid_url", "unresolvable_host", "blocked_address"]);
const $ = (id) => document.getElementById(id);

function fillSelect(select, values, chosen, label = (value) => value) {
  for (const value of values) {
    const option = new Option(label(value), value, false, value === chosen);
    select.append(option);
  }
}

export function setupForm(openapi, onSubmitted) {
  const body = openapi.paths["/api/process"].post.requestBody.content["application/json"].schema;
  const properties = resolve(openapi, body).properties;
  const schema = Object.fromEntries(Object.entries(properties).map(([name, s]) => [name, resolve(openapi, s)]));
  const fields = Object.keys(schema);
  const form = $("submit-form");
  const bitrate = $("audio_bitrate");
  const best = $("bitrate_best");
  const button = $("submit-button");

  $("extract_audio").checked = schema.extract_audio.default;
  $("keep_video").checked = schema.keep_video.default;
  // video_quality accepts heights as numbers too; the form offers each choice once, as text.
  const qualities = [...new Set(schema.video_quality.enum.map(String))];
  fillSelect($("video_quality"), qualities, String(schema.video_quality.default), (q) => (/^\d+$/.test(q) ? `${q}p` : q));
  fillSelect($("audio_format"), schema.audio_format.enum, schema.audio_format.default);
  bitrate.min = schema.audio_bitrate.minimum;
  bitrate.max = schema.audio_bitrate.maximum;
  best.checked = schema.audio_bitrate.default === "best";
  bitrate.value = best.checked ? "" : schema.audio_bitrate.default;
  bitrate.disabled = best.checked;
  $("audio_bitrate-hint").textContent = schema.audio_bitrate.description;
  best.addEventListener("change", () => {
    bitrate.disabled = best.checked;
    if (!best.checked && !bitrate.value) bitrate.value = schema.audio_bitrate.default;
  });
  const audioControls = () => {
    const on = $("extract_audio").checked;
    for (const id of ["audio_format", "audio_bitrate", "bitrate_best"]) $(id).disabled = !on;
    if (on) bitrate.disabled = best.checked;
  };
  $("extract_audio").addEventListener("change", audioControls);
  audioControls();

  function clearErrors() {
    for (const element of form.querySelectorAll(".error")) element.textContent = "";
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  function showError(error) {
    let field = URL_CODES.has(error.code) ? "url" : null;
    if (!field && error.status === 422) {
      // Option messages start with or name the option ("audio_bitrate must be ..."): the first named wins.
      const named = fields
        .map((name) => [new RegExp(`\\b${name}\\b`).exec(error.message)?.index ?? -1, name])
        .filter(([index]) => index >= 0)
        .sort((a, b) => a[0] - b[0]);
      field = named[0]?.[1] ?? null;
    }
    const target = field && $(`${field}-error`);
    if (target) {
      target.textContent = error.message;
      $(field).setAttribute("aria-invalid", "true");
      $(field).focus();
    } else {
      $("form-error").textContent = error.message;
    }
  }

  function holdOff(seconds, message) {
    // 429: the submit button waits as long as Retry-After says.
    let left = seconds;
    button.disabled = true;
    const tick = () => {
      $("form-error").textContent = `${message} (you can try again in ${left} s)`;
      if (left-- <= 0) {
        clearInterval(timer);
        button.disabled = false;
        $("form-error").textContent = message;
      }
    };
    const timer = setInterval(tick, 1000);
    tick();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    $("form-status").textContent = "";
    const body = {
      url: $("url").value,
      extract_audio: $("extract_audio").checked,
      keep_video: $("keep_video").checked,
      video_quality: $("video_quality").value,
    };
    if (body.extract_audio) {
      body.audio_format = $("audio_format").value;
      body.audio_bitrate = best.checked ? "best" : bitrate.value;
    }
    button.disabled = true;
    let held = false;
    try {
      const accepted = await api("/api/process", { method: "POST", body });
      $("url").value = "";
      $("form-status").textContent = accepted.message;
      onSubmitted(accepted);
    } catch (error) {
      if (!(error instanceof ApiError)) {
        $("form-error").textContent = `The service did not answer: ${error.message}`;
      } else if (error.status === 429 && error.retryAfter) {
        held = true;
        holdOff(Number(error.retryAfter), error.message);
      } else if (error.status === 401) {
        $("form-error").textContent = error.message;
      } else {
        showError(error);
      }
    } finally {
      if (!held) button.disabled = false;
    }
  });
}
