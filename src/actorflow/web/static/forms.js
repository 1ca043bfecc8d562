// Forms built from declared inputs (a flow's run form, a Pause task's resume form).
import { h } from "./util.js";

/** A run form field for one declared input, by its type. */
export function inputField(inp, prefix) {
  const id = `${prefix}-${inp.name}`;
  const type = String(inp.type).toLowerCase();
  const common = { id, name: inp.name, "data-type": type, required: inp.required && !("default" in inp) && type !== "bool" };
  const dflt = "default" in inp && inp.default !== null ? inp.default : undefined;
  let control;
  if (type === "bool" || type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: dflt === true });
  } else if (type === "int" || type === "integer" || type === "float" || type === "number") {
    control = h("input", { ...common, type: "number", step: type.startsWith("int") ? "1" : "any", value: dflt ?? "" });
  } else if (type === "file") {
    control = h("input", { ...common, type: "file" });
  } else if (["json", "list", "dict", "any", "array", "object"].includes(type)) {
    const text = dflt === undefined ? "" : (typeof dflt === "string" && type === "any" ? dflt : JSON.stringify(dflt));
    control = h("textarea", { ...common, rows: 3, placeholder: type === "list" ? "[1, 2]" : type === "dict" ? '{"key": "value"}' : "JSON" }, text);
  } else {
    control = h("input", { ...common, type: "text", value: dflt ?? "" });
  }
  const hint = [inp.type, inp.required && !("default" in inp) ? "required" : "optional", inp.description].filter(Boolean).join(" · ");
  return h("div.field", {},
    h("label", { for: id }, inp.name, inp.required && !("default" in inp) ? h("span", { "aria-hidden": "true" }, " *") : null),
    control,
    h("small.muted", { id: id + "-hint" }, hint));
}

/** Form values as the API takes them: FormData (files as parts), empty fields left out. */
export function formData(form) {
  const fd = new FormData();
  for (const el of form.querySelectorAll("[data-type]")) {
    if (el.type === "checkbox") fd.append(el.name, el.checked ? "true" : "false");
    else if (el.type === "file") { if (el.files.length) fd.append(el.name, el.files[0], el.files[0].name); }
    else if (el.value !== "") fd.append(el.name, el.value);
  }
  return fd;
}

/** The same values as a JSON object (JSON-typed fields parsed when they parse). */
export function formJson(form) {
  const out = {};
  for (const el of form.querySelectorAll("[data-type]")) {
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.value === "") continue;
    else if (["json", "list", "dict"].includes(el.dataset.type)) {
      try { out[el.name] = JSON.parse(el.value); } catch { out[el.name] = el.value; }
    } else out[el.name] = el.value;
  }
  return out;
}
