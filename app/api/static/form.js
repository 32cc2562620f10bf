// The submit form. Its choices, defaults and limits come from the API's OpenAPI document, and
// the API checks the input: its error messages are shown next to the field they concern.

import { api, ApiError, resolve } from "./api.js";

// Error codes that concern one field whatever their message says.
const CODE_FIELDS = {
  invalid_url: "url",
  unresolvable_host: "url",
  blocked_address: "url",
  invalid_cookies: "cookies",
  cookies_disabled: "cookies",
};
// Options sent only when they differ from the API's default (and their control is enabled).
const CHECKBOXES = ["embed_subtitles", "thumbnail", "embed_metadata", "embed_chapters", "reuse"];
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
  for (const hint of form.querySelectorAll("[data-description]")) {
    hint.textContent = schema[hint.dataset.description]?.description ?? "";
  }
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

  for (const name of CHECKBOXES) $(name).checked = schema[name].default;
  fillSelect($("container"), schema.container.enum, schema.container.default);
  // subtitles: a list of codes, or a word (the schema's enum beside the list: "all").
  const subtitleWords = (schema.subtitles.anyOf ?? []).flatMap((s) => resolve(openapi, s).enum ?? []);
  for (const element of form.querySelectorAll(".subtitles-words")) element.textContent = subtitleWords.join(", ");
  const subtitles = () => {
    const codes = $("subtitles").value.split(/[\s,]+/).filter(Boolean);
    const word = codes.find((code) => subtitleWords.includes(code.toLowerCase()));
    return word ? word.toLowerCase() : codes;
  };
  // Container and embedded subtitles are of the video: off without it (and embedding without subtitles).
  const videoControls = () => {
    const video = $("keep_video").checked;
    $("container").disabled = !video;
    $("embed_subtitles").disabled = !video || subtitles().length === 0;
  };
  $("keep_video").addEventListener("change", videoControls);
  $("subtitles").addEventListener("input", videoControls);
  videoControls();
  const maxItems = (schema.max_items.anyOf ?? []).map((s) => resolve(openapi, s)).find((s) => s.maximum);
  Object.assign($("max_items"), { min: maxItems?.minimum ?? 1, max: maxItems?.maximum ?? "" });
  const cookiesLimit = (schema.cookies.anyOf ?? []).map((s) => resolve(openapi, s).maxLength).find(Boolean);

  function clearErrors() {
    for (const element of form.querySelectorAll(".error")) element.textContent = "";
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  function showError(error) {
    let field = CODE_FIELDS[error.code] ?? null;
    if (!field && (error.status === 422 || error.status === 413)) {
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
      const folded = $(field).closest("details");
      if (folded) folded.open = true;
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
    const languages = subtitles();
    if (languages.length) body.subtitles = languages;
    for (const name of CHECKBOXES) {
      if (!$(name).disabled && $(name).checked !== schema[name].default) body[name] = $(name).checked;
    }
    if (!$("container").disabled && $("container").value !== schema.container.default) {
      body.container = $("container").value;
    }
    // Sent as typed: the API says what is wrong with them (a number field's value is "" when not a number).
    const items = $("playlist_items").value.trim();
    if (items) body.playlist_items = items;
    if ($("max_items").value) body.max_items = /^[0-9]+$/.test($("max_items").value) ? Number($("max_items").value) : $("max_items").value;
    // The cookies go from the file into the request only, never onto the page; the API checks them.
    const file = $("cookies").files[0];
    if (file) {
      try {
        // A character is at most 4 bytes of UTF-8: a larger file cannot be within the limit, and is not read.
        if (cookiesLimit && file.size > 4 * cookiesLimit) throw new Error(`at most ${cookiesLimit / 1024} KiB`);
        body.cookies = await file.text();
      } catch (error) {
        showError({ code: "invalid_cookies", message: `cookies file not used: ${error.message}` });
        return;
      }
    }
    button.disabled = true;
    let held = false;
    try {
      const accepted = await api("/api/process", { method: "POST", body });
      $("url").value = "";
      $("cookies").value = "";
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
