"""Infotext quoting, parsing and pasting (stand-in)."""
import json
import re

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(text):
    text = str(text)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(text):
    """Infotext -> {"Prompt", "Negative prompt", key: value...} (values unquoted strings)."""
    res = {}
    *lines, last = text.strip().split("\n")
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    res["Prompt"] = "\n".join(prompt)
    res["Negative prompt"] = "\n".join(negative)
    for key, value in re_param.findall(last):
        res[key.strip()] = unquote(value.strip())
    return res


def paste_values(params, infotext_fields):
    """What pasting does to each (component, key): convert to the component's value type."""
    out = []
    for component, key in infotext_fields:
        value = params.get(key)
        if value is None:
            continue
        kind = type(component.value)
        if kind is bool:
            value = value != "False" and bool(value)
        elif component.value is not None:
            value = kind(value)
        out.append((component, value))
    return out
