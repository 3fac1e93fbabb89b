"""The language of the captioned-shapes data: vocabulary, caption templates, and their inverse.

Captions are generated from templates and parsed back with regular expressions built from
the very same templates, so every generated caption is parseable by construction and the
two directions cannot drift apart. Colour and shape names are passed in (they live with the
pixels in textgan.data.sources.shapes) so that this module imports nothing from the project.
"""

import re
import string

SIZES = ("small", "large")
# One object: the 3x3 grid cell of its centroid, row-major (index = 3 * row + col).
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
# Two objects: "<first> <relation> <second>".
RELATIONS = ("to the left of", "to the right of", "above", "below")
INVERSE_RELATION = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}

# How a position reads after a noun: corners take "in", edges "at"/"on" (natural English).
PLACE_PHRASE = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}
# Shorter ways to say a relation (template fields rel_alt / inv_alt), and words a person
# might use instead; the parser accepts all of them.
RELATION_ALT = {"to the left of": "left of", "to the right of": "right of", "above": "over", "below": "under"}
RELATION_WORDS = {
    **{r: r for r in RELATIONS},
    **{alt: r for r, alt in RELATION_ALT.items()},
    "on the left of": "to the left of", "on the right of": "to the right of", "beneath": "below",
}
POSITION_WORDS = {**{p: p for p in POSITIONS}, "middle": "center", "centre": "center"}

# Fields: {a} article of the next word; one object: size color shape place;
# two objects "A relation B": sA cA hA (size, colour, shape of A), sB cB hB, and the relation
# as rel / rel_alt, or (when B is named first) inv / inv_alt.
ONE_OBJECT_TEMPLATES = (
    "{a} {size} {color} {shape} {place}",
    "there is {a} {color} {shape}, {size}, {place}",
    "{place} there is {a} {size} {color} {shape}",
    "{a} {shape} that is {color} and {size}, {place}",
    "{a} {size} {shape} painted {color}, {place}",
)
TWO_OBJECT_TEMPLATES = (
    "{a} {sA} {cA} {hA} {rel} {a} {sB} {cB} {hB}",
    "{a} {sB} {cB} {hB} {inv} {a} {sA} {cA} {hA}",
    "{a} {sA} {cA} {hA} and {a} {sB} {cB} {hB}, the {cA} one {rel} the {cB} one",
    "there is {a} {sB} {cB} {hB} {inv_alt} {a} {sA} {cA} {hA}",
    "{a} {sA} {cA} {hA} sits {rel_alt} {a} {sB} {cB} {hB}",
)


def _fill(template: str, values: dict) -> str:
    text = template.format(a="a", **values)
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "a orange" -> "an orange"


def scene_captions(objects: list, relation, rng) -> list:
    """All templates filled with one scene's attributes, in an order drawn from `rng`.

    objects: [{"shape", "color", "size", "position"}]; relation: None (one object) or the
    relation of objects[0] to objects[1]."""
    if relation is None:
        (obj,) = objects
        values = {"size": obj["size"], "color": obj["color"], "shape": obj["shape"],
                  "place": PLACE_PHRASE[obj["position"]]}
        captions = [_fill(t, values) for t in ONE_OBJECT_TEMPLATES]
    else:
        first, second = objects
        inverse = INVERSE_RELATION[relation]
        values = {"sA": first["size"], "cA": first["color"], "hA": first["shape"],
                  "sB": second["size"], "cB": second["color"], "hB": second["shape"],
                  "rel": relation, "inv": inverse,
                  "rel_alt": RELATION_ALT[relation], "inv_alt": RELATION_ALT[inverse]}
        captions = [_fill(t, values) for t in TWO_OBJECT_TEMPLATES]
    return [captions[i] for i in rng.permutation(len(captions))]


def _alternation(words) -> str:
    # Longest first, so that "top left" wins over "top" and "to the left of" over "left of".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _template_regex(template: str, colors, shapes) -> re.Pattern:
    vocab = {"size": SIZES, "color": colors, "shape": shapes}
    field_kind = {"size": "size", "sA": "size", "sB": "size", "color": "color", "cA": "color",
                  "cB": "color", "shape": "shape", "hA": "shape", "hB": "shape"}
    relation_words = _alternation(RELATION_WORDS)
    parts, seen = [], set()
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field == "a":
            parts.append("an?")
        elif field == "place":
            parts.append(rf"(?:in|at|on) the (?P<position>{_alternation(POSITION_WORDS)})(?: corner)?")
        elif field in ("rel", "rel_alt"):
            parts.append(f"(?P<rel>{relation_words})")
        elif field in ("inv", "inv_alt"):
            parts.append(f"(?P<inv>{relation_words})")
        elif field in seen:  # the same attribute named twice must be the same word
            parts.append(f"(?P={field})")
        else:
            seen.add(field)
            parts.append(f"(?P<{field}>{_alternation(vocab[field_kind[field]])})")
    return re.compile("".join(parts))


def caption_parser(colors, shapes):
    """A function caption -> {"objects": [...], "relation": str|None} for this vocabulary.

    Two-object captions come back as objects [A, B] with relation such that "A relation B"
    holds; a caption that names B first ("B to the right of A") may also come back as
    [B, A] with the inverse relation, which describes the same picture."""
    one = [_template_regex(t, colors, shapes) for t in ONE_OBJECT_TEMPLATES]
    two = [_template_regex(t, colors, shapes) for t in TWO_OBJECT_TEMPLATES]

    def parse(caption: str) -> dict:
        text = normalize_caption(caption)
        for regex in one:
            m = regex.fullmatch(text)
            if m:
                obj = {"shape": m["shape"], "color": m["color"], "size": m["size"],
                       "position": POSITION_WORDS[m["position"]]}
                return {"objects": [obj], "relation": None}
        for regex in two:
            m = regex.fullmatch(text)
            if m:
                groups = m.groupdict()
                if groups.get("rel") is not None:
                    relation = RELATION_WORDS[groups["rel"]]
                else:
                    relation = INVERSE_RELATION[RELATION_WORDS[groups["inv"]]]
                objects = [{"shape": m[f"h{o}"], "color": m[f"c{o}"], "size": m[f"s{o}"], "position": None}
                           for o in "AB"]
                return {"objects": objects, "relation": relation}
        raise ValueError(
            f"{caption!r} is not a captioned-shapes caption: expected e.g. "
            f"'a small red circle in the top left' or 'a small red circle to the left of a large "
            f"blue square' (colours: {', '.join(colors)}; shapes: {', '.join(shapes)}; "
            f"sizes: {', '.join(SIZES)})"
        )

    return parse


def normalize_caption(caption: str) -> str:
    """Lower case, one space between words, ", " after commas, no final full stop."""
    if not isinstance(caption, str):
        raise ValueError(f"a caption must be a string, got {type(caption).__name__}: {caption!r}")
    text = re.sub(r"\s*,\s*", ", ", caption.strip().lower())
    text = re.sub(r"\s+", " ", text)
    return text.rstrip(" .")
