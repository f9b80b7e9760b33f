"""The one escaping function for data inlined in a page: every JSON block inside a <script> element
(Vega-Lite specs, the compute slider's table, the live page's state) goes through `script_json`.

Inside <script> the HTML parser ends the element at `</script`, and `<!--` followed by `<script` switches it
into a state where the real `</script>` no longer closes it (the rest of the page becomes script). JSON has
no need of a literal <, > or &: each is written as its \\uXXXX escape, which JSON.parse and JavaScript read
back as the same character, so a run id, a status or an error message from a final.json cannot change the
page's structure whatever it holds. U+2028 and U+2029 are escaped too (line terminators in older JavaScript).
"""

from __future__ import annotations

import json

from markupsafe import Markup

_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def script_json(value: object) -> Markup:
    """`value` as compact JSON that is safe as the whole content of a <script> element (NaN is an error:
    callers write null for a missing number)."""

    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return Markup(text.translate(_ESCAPES))


def script_code(code: str) -> Markup:
    """JavaScript source (the inlined Vega bundle) safe inside a <script> element: `</script` cannot end it
    early (written `<\\/script`, the same string to JavaScript)."""

    return Markup(code.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT"))
