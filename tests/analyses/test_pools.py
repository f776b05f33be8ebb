"""The built-in TEXTSPAN pools (size, uniqueness, coverage, toy vocabulary) and the pool reader."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cliplens.analyses import pools
from cliplens.analyses.pools import POOLS, load_pool, read_pool_file, toy_pool_factors
from cliplens.errors import InvalidInputError
from cliplens.toyworld.captions import NUMBER_WORDS
from cliplens.toyworld.scenes import BG_COLOURS, BG_KINDS, COLOURS, MAX_OBJECTS, POSITIONS, SHAPES, SIZES
from cliplens.toyworld.tokenizer import ToyTokenizer, build_vocab, split_words
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_POOL = SHARED / "reference-data" / "textspan-pools" / "image_descriptions_general.txt"

#: category -> (keywords, minimum number of lines that contain one of them as a whole word)
CATEGORIES: dict[str, tuple[tuple[str, ...], int]] = {
    "colours": (("red", "blue", "green", "yellow", "purple", "orange", "pink", "black", "white", "gray",
                 "turquoise", "colors", "color"), 200),
    "colour combinations": ((r"\w+ and (?:red|blue|green|yellow|purple|orange|pink|black|white|gray|gold|"
                             r"silver|turquoise|brown)",), 30),
    "shapes": (("circle", "square", "triangle", "rectangle", "hexagon", "star", "heart", "spiral", "cube",
                "sphere", "oval", "cone", "pyramid", "shapes", "lines", "line", "diamond", "cross", "crescent",
                "octagon", "pentagon", "cylinder", r"\w+-shaped", "dots?", "curve", "swirl"), 80),
    "textures": (("texture", "fluffy", "rough", "smooth", "shiny", "furry", "wrinkled", "grainy", "cracked",
                  "rusty", "fuzzy", "silky", "glossy"), 50),
    "materials": (("wooden", "wood", "metal", "glass", "stone", "marble", "concrete", "brick", "plastic",
                   "leather", "ceramic", "paper", "steel", "made of"), 80),
    "patterns": (("pattern", "striped", "stripes", "polka dot", "checkered", "plaid", "floral", "zigzag",
                  "camouflage", "tartan", "paisley"), 50),
    "locations in the image": (("on the left", "on the right", "at the top", "at the bottom", "in the center",
                                "in the middle", "corner", "foreground", "background", "left side",
                                "right side"), 120),
    "counts": (("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "many",
                "several", "a few", "a group of", "a pair of", "dozens of", "single", "a lot of"), 100),
    "objects": (("chair", "table", "lamp", "clock", "book", "cup", "bottle", "phone", "laptop", "umbrella",
                 "key", "guitar", "candle", "mirror", "vase", "toy", "ball"), 80),
    "animals": (("dogs?", "cats?", "horses?", "birds?", "fish", "lions?", "tigers?", "elephants?", "bears?",
                 "rabbits?", "cows?", "sheep", "owls?", "butterfly", "butterflies", "monkeys?", "animals?",
                 "puppy", "kitten", "ducks?", "goats?", "pigs?", "deer", "wolf", "wolves", "fox", "snakes?",
                 "frogs?", "whales?", "sharks?", "penguins?", "zebras?", "giraffes?", "insects?", "spiders?",
                 "bees?", "parrots?", "eagles?", "camels?", "otters?", "squirrels?", "mouse", "mice"), 120),
    "people: ages": (("baby", "toddler", "child", "children", "boy", "girl", "teenager", "young man",
                      "young woman", "elderly", "old man", "old woman"), 50),
    "people: roles": (("doctor", "nurse", "chef", "firefighter", "police officer", "soldier", "teacher",
                       "student", "farmer", "pilot", "astronaut", "musician", "athlete", "scientist",
                       "surfer", "dancer", "businessman", "businesswoman", "judge", "waiter", "clown"), 40),
    "people: activities": (("running", "walking", "swimming", "reading", "cooking", "dancing", "singing",
                            "playing", "riding", "sleeping", "eating", "jumping", "smiling", "laughing",
                            "crying", "holding", "sitting", "working", "driving", "painting", "fishing",
                            "taking a", "using a", "doing", "skiing", "surfing", "hugging", "waving",
                            "carrying", "praying", "meditating", "typing", "cleaning", "shopping"), 80),
    "people: clothing": (("wearing", "in a wedding dress", "in pajamas", "in a tuxedo", "uniform",
                          "hat", "glasses", "jacket", "dress", "shirt", "coat", "scarf", "sweater", "kimono",
                          "swimsuit", "with a beard", "with long hair", "with curly hair", "barefoot"), 60),
    "scenes and places": (("kitchen", "office", "street", "city", "forest", "beach", "mountain", "desert",
                           "park", "room", "village", "lake", "river", "indoor", "outdoor", "landscape",
                           "cafe", "restaurant", "museum", "library", "classroom", "garden", "farm", "valley",
                           "meadow", "jungle", "ocean", "island", "harbor", "market", "highway", "station",
                           "field", "waterfall", "canyon", "cave", "town", "alley", "scene"), 150),
    "weather": (("sunny", "rainy", "snowy", "foggy", "cloudy", "stormy", "windy", "rain", "snow", "fog",
                 "storm", "thunderstorm", "weather", "rainbow", "lightning", "clouds?", "hail", "tornado",
                 "frost", "overcast", "misty", "hazy", "sky"), 60),
    "time of day": (("night", "sunset", "sunrise", "dawn", "dusk", "morning", "afternoon", "noon",
                     "twilight", "midnight", "golden hour", "blue hour", "daytime", "nighttime", "moon",
                     "day", "evening"), 60),
    "seasons": (("spring", "summer", "autumn", "winter", "fall", "christmas", "halloween", "harvest"), 40),
    "art styles and media": (("painting", "sketch", "drawing", "render", "pixel art", "watercolor",
                              "cartoon", "illustration", "poster", "print", "sculpture", "photo",
                              "photograph", "style", "collage", "anime"), 200),
    "lighting": (("light", "lit", "backlit", "shadows", "shadow", "candlelight", "moonlight", "lighting",
                  "glowing", "overexposed", "underexposed", "contrast"), 60),
    "camera": (("close-up", "aerial", "wide angle", "blurry", "blur", "macro", "bokeh", "top-down",
                "fisheye", "out of focus", "angle", "shot", "view", "panorama", "zoomed-in", "zoomed-out",
                "footage", "exposure", "grainy", "pixelated", "resolution", "cropped", "snapshot"), 80),
    "emotions and moods": (("happy", "sad", "angry", "calm", "peaceful", "lonely", "mysterious", "scary",
                            "cheerful", "gloomy", "mood", "atmosphere", "surprised", "scared", "excited",
                            "joyful", "nostalgic", "romantic", "eerie", "creepy", "playful", "tense", "chaotic",
                            "serene", "melancholic", "cozy", "dreamy", "festive", "dramatic", "ominous",
                            "worried", "proud", "bored", "tired", "confused", "nervous", "feels", "expression",
                            "emotional", "fear", "joy", "sadness", "anger", "grief"), 80),
    "text, letters and numbers": (("text", "letter", "letters", "writing", "written", "sign", "number",
                                   "digit", "word", "handwritten", "handwriting", "page"), 120),
    "single letters": ((r"the letter [A-Z]",), 26),
    "digits": ((r"the number \d",), 10),
    "symbols and logos": (("symbol", "logo", "icon", "flag", "emblem", "badge", "sign", "arrow",
                           "mark"), 80),
    "food": (("pizza", "burger", "sushi", "cake", "bread", "salad", "soup", "coffee", "fruit", "food",
              "pasta", "apple", "ice cream", "plate of", "bowl of", "tacos?", "noodles", "cheese", "donut",
              "cookies", "chocolate", "pancakes", "waffles", "steak", "sandwich", "rice", "tea", "wine",
              "juice", "meal", "dinner", "breakfast", "vegetables", "strawberries", "grapes"), 80),
    "vehicles": (("car", "truck", "bus", "bicycle", "motorcycle", "train", "airplane", "boat", "ship",
                  "helicopter", "tractor", "taxi", "van"), 80),
    "buildings": (("house", "building", "skyscraper", "castle", "church", "temple", "tower", "bridge",
                   "barn", "cabin", "palace", "lighthouse", "architecture", "mosque", "cathedral", "cottage",
                   "mansion", "hut", "hotel", "school", "hospital", "factory", "warehouse", "museum", "villa",
                   "fort", "stadium", "facade", "ruins?", "windmill", "igloo", "greenhouse"), 80),
    "abstract concepts": (("freedom", "love", "peace", "war", "time", "death", "hope", "power", "concept",
                           "symbol of", "evokes", "justice", "technology", "friendship", "wealth", "poverty",
                           "danger", "science", "religion", "education", "history", "the future", "the past",
                           "success", "failure", "chaos", "infinity", "silence", "luxury", "mystery",
                           "knowledge", "memory", "dreams", "courage", "beauty", "metaphor for",
                           "representation of", "image about"), 60),
}


def _count(texts: list[str], keywords: tuple[str, ...]) -> int:
    pattern = re.compile(r"\b(?:" + "|".join(keywords) + r")\b", re.IGNORECASE)
    return sum(bool(pattern.search(t)) for t in texts)


# --------------------------------------------------------------------------- the general pool
@pytest.fixture(scope="module")
def general() -> list[str]:
    return load_pool("general")


def test_general_pool_size_and_uniqueness(general):
    assert len(general) >= 3000
    assert len(set(general)) == len(general)
    assert len({t.lower() for t in general}) == len(general)  # not even case variants
    assert all(t == t.strip() and t and "\t" not in t for t in general)
    assert all(len(t) <= 80 and len(split_words(t)) <= 12 for t in general)  # short phrases
    assert all(t[0].isupper() or t[0].isdigit() for t in general)


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_general_pool_covers_category(general, category):
    keywords, minimum = CATEGORIES[category]
    n = _count(general, keywords)
    assert n >= minimum, f"{category}: {n} lines < {minimum}"


def test_general_pool_examples(general):
    low = {t.lower() for t in general}
    for t in ("a red car", "photo taken at night", "an image with a lot of text", "two dogs",
              "image on the left side", "watercolor painting", "the letter k", "pixel art image",
              "a close-up of a flower", "3d render"):
        assert t in low, t


def test_general_pool_articles(general):
    bad = [t for t in general if re.search(r"\b[Aa] (?:[ai]|e(?!u)|o(?!ne)|u(?!ni|s|ki))", t)
           or re.search(r"\b[Aa]n (?![aeiouAEIOU]|hour|HDR|X-ray|8|11|18)", t)]
    assert not bad, bad[:10]


def test_general_pool_is_not_the_original(general):
    if not REFERENCE_POOL.is_file():
        pytest.skip("shared reference pools not present")
    ref = {line.strip().lower() for line in REFERENCE_POOL.read_text(encoding="utf-8", errors="replace").splitlines()}
    common = [t for t in general if t.lower() in ref]
    # only coincidences of generic phrases ("A cat", "A lighthouse") are expected
    assert len(common) < 0.06 * len(general), len(common)
    assert all(len(split_words(t)) <= 4 for t in common), [t for t in common if len(split_words(t)) > 4]


def test_general_pool_is_the_generator_output(tmp_path):
    """The shipped file is exactly what tools/make_textspan_pool.py writes (deterministic)."""
    tool = ROOT / "tools" / "make_textspan_pool.py"
    if not tool.is_file():
        pytest.skip("generator not in this checkout")
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "print('\\n'.join(m.general_pool()))")
    out = subprocess.run([sys.executable, "-c", code, str(tool)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == load_pool("general")


# --------------------------------------------------------------------------- the toy pool
def test_toy_pool_words_are_known():
    toy = load_pool("toy")
    assert ToyTokenizer(build_vocab()).unknown_words(toy) == []
    assert len(set(toy)) == len(toy)


def test_toy_pool_factors_cover_every_value():
    toy = load_pool("toy")
    factors = toy_pool_factors()
    assert list(factors) == toy  # one row per line, same order
    expected = {
        "shape": set(SHAPES), "colour": set(COLOURS), "size": set(SIZES), "position": set(POSITIONS),
        "bg_kind": set(BG_KINDS), "bg_colour": set(BG_COLOURS),
        "count": {str(n) for n in range(1, MAX_OBJECTS + 1)},
    }
    seen: dict[str, Counter] = {f: Counter() for f in expected}
    for factor, value in factors.values():
        assert factor in expected, factor
        seen[factor][value] += 1
    for factor, values in expected.items():
        assert set(seen[factor]) == values, factor
        assert all(2 <= n <= 4 for n in seen[factor].values()), (factor, seen[factor])


def test_toy_pool_phrases_name_their_value():
    for text, (factor, value) in toy_pool_factors().items():
        word = NUMBER_WORDS[int(value)] if factor == "count" else value
        assert re.search(rf"\b{word}\b", text), (text, factor, value)
        if factor in ("colour", "shape", "size"):  # no other factor's value is named
            others = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}
            for f2, vals in others.items():
                if f2 != factor:
                    assert not any(re.search(rf"\b{v}\b", text) for v in vals), (text, f2)


# --------------------------------------------------------------------------- the reader
def test_pools_registry():
    assert set(POOLS) == {"general", "toy"}
    for name in POOLS:
        assert load_pool(name)


def test_user_file(tmp_path):
    p = tmp_path / "pool.txt"
    p.write_text("# my pool\n\nA red car\n  A blue car  \n# another comment\nA dog\n", encoding="utf-8")
    assert load_pool(p) == ["A red car", "A blue car", "A dog"]
    assert load_pool(str(p)) == ["A red car", "A blue car", "A dog"]
    assert read_pool_file(p) == load_pool(p)


def test_user_file_bom_and_crlf(tmp_path):
    p = tmp_path / "pool.txt"
    p.write_bytes("\ufeffA cat\r\nA dog\r\n".encode())
    assert load_pool(p) == ["A cat", "A dog"]


def test_user_file_duplicates_removed_with_a_note(tmp_path):
    p = tmp_path / "pool.txt"
    p.write_text("A cat\nA dog\nA cat\n A dog\nA bird\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"repeats 2 line\(s\).*3 texts"):
        texts = load_pool(p)
    assert texts == ["A cat", "A dog", "A bird"]


@pytest.mark.parametrize("content", ["", "\n\n   \n", "# only comments\n# here\n"])
def test_user_file_empty(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no texts"):
        load_pool(p)


def test_user_file_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="not found.*'general'"):
        load_pool(tmp_path / "missing.txt")
    with pytest.raises(InvalidInputError, match="not found"):
        load_pool("genral")  # a typo of a name is a missing file, and the message lists the names
    with pytest.raises(InvalidInputError, match="a folder"):
        load_pool(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        load_pool(bad)
    with pytest.raises(InvalidInputError, match="not int"):
        load_pool(3)  # type: ignore[arg-type]


def test_package_does_not_use_the_generator():
    src = Path(pools.__file__).read_text()
    assert "make_textspan_pool" not in src.split('"""', 2)[2]


def test_the_default_pool_follows_the_model():
    from cliplens.analyses.pools import default_pool

    assert default_pool({"family": "toy", "name": "toy"}) == "toy"
    assert default_pool({"family": "openclip", "name": "ViT-B-16"}) == "general"
    assert default_pool({"family": "hf"}) == "general" and default_pool({}) == "general"
