"""Write the TEXTSPAN text pools that cliplens ships (package data), deterministically.

    python tools/make_textspan_pool.py          # rewrites src/cliplens/data/textspan_*.txt/.tsv

Outputs:

* ``textspan_general.txt``: short, varied image descriptions ("A red car", "Photo taken at night",
  "A watercolor painting of a lighthouse", "The letter K", ...), one per line. Every line comes
  from the word lists and templates below, written for this project: colours, shapes, textures,
  materials, patterns, locations in the image, counts, objects, animals, people, scenes and places,
  weather, time of day, seasons, art styles and media, lighting, camera, moods, text and letters,
  symbols and logos, food, vehicles, buildings, abstract concepts and image properties. Each
  category contributes all of its single phrases and a seeded sample of its combinations, so the
  pool is balanced and re-running the script gives the same file.
* ``textspan_toy.txt`` and ``textspan_toy_factors.tsv``: phrases about the toy world's factors
  (every shape, colour, size, position, background kind and colour, count 1-4; four phrasings
  each, in the toy caption grammar's words), and for each phrase the factor and value it names.

The package reads the files only; it never imports this script.
"""

from __future__ import annotations

import random
import sys
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "cliplens" / "data"
SEED = 9
#: the share of each category's combination quota that is kept (sets the pool's size, ~3,500 lines)
COMBO_SCALE = 0.25

# --------------------------------------------------------------------------- grammar helpers
_A_BEFORE_VOWEL = ("uni", "use", "usu", "eu", "one ", "one-", "once", "uki")  # sounds: "you", "won"
_AN_BEFORE_CONSONANT = ("hour", "honest", "heir", "x-ray", "hdr", "8", "11", "18")


def art(phrase: str) -> str:
    """``phrase`` with its indefinite article ("a car", "an owl", "a uniform", "an X-ray")."""
    low = phrase.lower()
    if low.startswith(_AN_BEFORE_CONSONANT):
        return "an " + phrase
    if low.startswith(_A_BEFORE_VOWEL):
        return "a " + phrase
    return ("an " if low[:1] in "aeiou" else "a ") + phrase


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def plural(noun: str) -> str:
    irregular = {
        "mouse": "mice", "sheep": "sheep", "fish": "fish", "deer": "deer", "goose": "geese",
        "person": "people", "child": "children", "man": "men", "woman": "women", "knife": "knives",
        "leaf": "leaves", "wolf": "wolves", "shelf": "shelves", "loaf": "loaves", "tooth": "teeth",
        "foot": "feet", "ox": "oxen", "cactus": "cacti", "bus": "buses", "octopus": "octopuses",
        "hippopotamus": "hippos", "moose": "moose", "bison": "bison", "salmon": "salmon",
        "police officer": "police officers", "photo": "photos", "piano": "pianos", "radio": "radios",
        "kangaroo": "kangaroos", "zoo": "zoos", "flamingo": "flamingos", "volcano": "volcanoes",
        "tomato": "tomatoes", "potato": "potatoes", "hero": "heroes", "scarf": "scarves",
        "starfish": "starfish", "goldfish": "goldfish", "jellyfish": "jellyfish", "buffalo": "buffalo",
        "human": "humans", "pair of dice": "pairs of dice",
    }
    words = noun.split(" ")
    last = words[-1]
    if noun in irregular:
        return irregular[noun]
    if last in irregular:
        p = irregular[last]
    elif last.endswith("man"):
        p = last[:-3] + "men"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        p = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return " ".join(words[:-1] + [p])


NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]


# --------------------------------------------------------------------------- word lists
COLOURS = [
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray",
    "beige", "turquoise", "teal", "navy blue", "maroon", "gold", "silver", "violet", "magenta",
    "cyan", "lime green", "olive green", "crimson", "lavender", "dark blue", "light blue", "dark green",
    "bright red", "pale yellow", "cream", "burgundy", "coral", "mint green", "peach", "indigo",
]
BASIC_COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
                 "gray", "gold", "silver", "turquoise"]
COLOURABLE = [
    "car", "umbrella", "balloon", "door", "dress", "bicycle", "chair", "shirt", "hat", "bag", "bus",
    "boat", "kite", "mug", "sofa", "wall", "truck", "scarf", "lamp", "book", "ball", "flower", "tulip",
    "rose", "jacket", "sweater", "shoe", "backpack", "candle", "bowl", "vase", "envelope", "towel",
    "motorcycle", "tent", "blanket", "cup", "pen", "bench", "gate", "fence", "window frame", "house",
    "mailbox", "tractor", "suitcase", "toothbrush", "helmet", "glove", "sock", "ribbon", "feather",
]
COLOUR_PHRASES = [
    "a colorful image", "an image with vivid colors", "a black and white photo", "a monochrome image",
    "pastel colors", "neon colors", "earth tones", "muted colors", "warm colors", "cool colors",
    "a rainbow of colors", "bright colors", "dark colors", "a mostly white image", "a mostly black image",
    "a faded photo with washed-out colors", "a saturated image", "a desaturated image",
    "a gradient from blue to purple", "a gradient from orange to pink", "a splash of red paint",
    "a single spot of color", "colorful paint splatter", "an image in shades of gray", "a sepia-toned photo",
    "a duotone image", "a color palette", "color swatches", "a color wheel", "a high contrast color scheme",
    "complementary colors", "a rainbow", "paint tubes of every color",
]
SHAPES = [
    "circle", "square", "triangle", "rectangle", "star", "heart", "hexagon", "octagon", "pentagon",
    "oval", "spiral", "diamond", "cross", "arrow", "crescent", "cube", "sphere", "cone", "pyramid",
    "cylinder", "ring", "semicircle", "trapezoid", "rhombus", "zigzag line", "wavy line", "straight line",
    "dot", "curve", "swirl", "polygon", "spike",
]
SHAPE_PHRASES = [
    "geometric shapes", "simple shapes", "abstract shapes", "overlapping circles", "concentric circles",
    "parallel lines", "diagonal lines", "vertical lines", "horizontal lines", "crossing lines",
    "a grid of squares", "a round object", "a square object", "a pointy object", "a curved shape",
    "a symmetrical shape", "an irregular shape", "sharp angles", "rounded corners", "a circular frame",
    "a spherical object", "a flat rectangle", "a tall thin object", "a long narrow shape",
]
TEXTURES = [
    "fluffy", "rough", "smooth", "shiny", "glossy", "matte", "furry", "wrinkled", "bumpy", "grainy",
    "cracked", "rusty", "velvety", "fuzzy", "silky", "scaly", "wet", "sticky", "polished", "weathered",
    "woven", "knitted", "spiky", "soft", "hairy", "crumpled", "porous", "sandy", "muddy", "dusty",
    "frosted", "slimy", "feathery", "leathery", "peeling", "ridged", "pitted", "glittery", "sparkly",
    "creased", "corrugated", "quilted", "mossy", "icy",
]
TEXTURE_SURFACES = ["surface", "texture", "wall", "fabric", "stone", "floor"]
TEXTURE_PHRASES = [
    "a close-up of a rough texture", "a fine texture", "a coarse texture", "a soft fluffy texture",
    "peeling paint", "tree bark", "animal fur", "bird feathers", "fish scales", "wood grain",
    "a knitted sweater texture", "crinkled aluminum foil", "bubble wrap", "a sponge", "velvet fabric",
    "cracked dry earth", "rippled sand", "water droplets", "frost on a window", "rust on metal",
    "a textured wall", "a smooth surface", "a reflective surface", "a transparent object",
    "a translucent material", "a shiny metallic surface",
]
MATERIAL_OBJECTS = {
    "wooden": ["table", "chair", "bowl", "box", "door", "floor", "fence", "bench", "bridge", "toy", "spoon",
               "cabin", "boat", "barrel", "ladder", "sculpture"],
    "metal": ["box", "door", "fence", "bench", "bridge", "sculpture", "bucket", "gate", "chair", "sign"],
    "glass": ["bottle", "vase", "bowl", "window", "jar", "cup", "door", "sculpture", "building", "table"],
    "stone": ["wall", "bridge", "house", "statue", "path", "bench", "staircase", "fountain", "arch", "tower"],
    "marble": ["statue", "floor", "column", "table", "staircase", "sculpture", "countertop"],
    "concrete": ["wall", "building", "floor", "staircase", "bridge", "bench", "bunker"],
    "brick": ["wall", "house", "building", "chimney", "path", "tower", "arch"],
    "plastic": ["bottle", "bag", "chair", "toy", "cup", "box", "bucket", "container"],
    "paper": ["bag", "cup", "airplane", "lantern", "boat", "crane", "flower", "crown"],
    "cardboard": ["box", "sign", "cutout", "tube"],
    "leather": ["bag", "jacket", "boot", "wallet", "sofa", "belt", "saddle", "ball"],
    "woolen": ["sweater", "hat", "scarf", "blanket", "sock", "mitten"],
    "ceramic": ["bowl", "mug", "plate", "vase", "tile", "pot", "teapot"],
    "clay": ["pot", "figurine", "vase", "brick", "sculpture"],
    "rubber": ["duck", "ball", "boot", "tire", "glove"],
    "steel": ["bridge", "beam", "knife", "pipe", "tower", "door"],
    "copper": ["pot", "pipe", "roof", "kettle", "statue"],
    "golden": ["crown", "ring", "coin", "statue", "trophy", "necklace", "watch", "key", "frame"],
    "silver": ["ring", "coin", "spoon", "necklace", "watch", "key", "bracelet"],
    "bamboo": ["basket", "fence", "hut", "chair"],
    "wicker": ["basket", "chair", "chest"],
    "porcelain": ["doll", "teacup", "plate", "vase"],
    "ice": ["sculpture", "cube", "castle", "cave"],
    "crystal": ["glass", "chandelier", "ball", "vase"],
    "denim": ["jacket", "skirt", "bag"],
    "cotton": ["shirt", "towel", "dress"],
    "silk": ["scarf", "dress", "ribbon", "pillow"],
    "straw": ["hat", "basket", "bag"],
}
MATERIAL_NOUNS = [
    "wood", "metal", "glass", "stone", "marble", "concrete", "brick", "plastic", "paper", "cardboard",
    "fabric", "leather", "wool", "cotton", "denim", "silk", "ceramic", "clay", "rubber", "steel", "copper",
    "gold", "silver", "sand", "ice", "bamboo", "wicker", "granite", "aluminum", "porcelain", "crystal",
    "velvet", "lace", "cork", "foam", "wax", "chalk", "charcoal", "plaster", "tin",
]
SURFACE_MATERIALS = ["wood", "metal", "glass", "stone", "marble", "concrete", "brick", "plastic", "granite",
                     "steel", "copper", "ice", "leather", "rubber", "aluminum", "plaster", "cork", "tin"]
PATTERNS = [
    "striped", "polka dot", "checkered", "plaid", "floral", "geometric", "zigzag", "paisley", "camouflage",
    "herringbone", "houndstooth", "honeycomb", "leopard print", "zebra print", "tartan", "argyle",
    "chevron", "grid", "mosaic", "spiral", "tiled", "dotted", "swirly", "tie-dye", "pinstripe",
    "diamond", "wavy", "hexagonal", "snakeskin", "tropical", "star", "heart",
]
PATTERN_THINGS = ["shirt", "dress", "wallpaper", "tablecloth", "scarf", "blanket", "floor", "tie", "umbrella",
                  "pillow", "curtain", "rug", "mug", "background", "fabric", "skirt", "bag", "carpet"]
PATTERN_PHRASES = [
    "a repeating pattern", "a seamless pattern", "a symmetrical pattern", "a random pattern",
    "an intricate pattern", "a simple pattern", "a kaleidoscope pattern", "a tessellation", "a fractal",
    "an optical illusion", "a maze", "a checkerboard", "stripes", "polka dots", "a mandala",
    "a Celtic knot", "a moire pattern", "a chessboard", "a brick pattern", "a lattice",
]
LOCATIONS = [
    "on the left", "on the right", "at the top", "at the bottom", "in the center", "in the middle",
    "in the top left corner", "in the top right corner", "in the bottom left corner",
    "in the bottom right corner", "in the foreground", "in the background", "at the edge of the image",
    "on the left side of the image", "on the right side of the image", "at the top of the image",
    "at the bottom of the image", "in the center of the image", "in the corner", "far away",
    "in the distance", "close to the camera",
]
LOCATION_PHRASES = [
    "image on the left side", "image on the right side", "an object in the center", "a centered object",
    "an off-center subject", "a small object in a large empty space", "a subject in the lower third",
    "a subject on the left and empty space on the right", "a horizon in the middle of the frame",
    "a split image with two halves", "a left half and a right half", "a top half and a bottom half",
    "a border around the image", "a frame within a frame", "objects along the edges",
    "a picture in picture", "a large object filling the frame", "something hidden in the corner",
    "a person on the right side of the image", "text in the top left corner", "text at the bottom of the image",
    "a logo in the corner", "a watermark in the corner", "a caption at the bottom", "a title at the top",
    "a bright spot in the center", "a dark area on the left", "a dark area at the bottom",
    "sky at the top of the image", "ground at the bottom of the image", "a vanishing point in the center",
    "everything on one side", "a symmetrical composition", "the main subject on the left",
]
LOCATED_THINGS = [
    "a dog", "a cat", "a person", "a tree", "a car", "a house", "a bird", "a flower", "a boat", "a sign",
    "a face", "a ball", "a lamp", "a window", "a mountain", "the sun", "the moon", "a cloud", "a building",
    "a red object", "a blue object", "a white object", "a bright light", "a shadow", "a small figure",
    "a crowd", "a logo", "some text", "a number", "a horse", "a chair", "a child", "a fence", "a road",
]
COUNTABLE = [
    "dog", "cat", "bird", "horse", "cow", "sheep", "duck", "fish", "butterfly", "person", "child",
    "woman", "man", "car", "bicycle", "boat", "tree", "flower", "apple", "orange", "banana", "egg",
    "cup", "book", "chair", "balloon", "candle", "house", "window", "door", "ball", "coin", "key",
    "star", "cloud", "bottle", "shoe", "hat", "lamp", "rock", "pencil", "plane", "bus", "umbrella",
    "glass", "tomato", "leaf", "feather", "shell", "teddy bear", "kite", "clock", "mushroom",
]
COUNT_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a dozen",
               "a few", "several", "many", "a lot of", "a pair of", "a group of", "hundreds of",
               "countless", "dozens of", "a row of", "a pile of"]
PILEABLE = {"apple", "orange", "banana", "egg", "cup", "book", "chair", "balloon", "candle", "house",
            "window", "door", "ball", "coin", "key", "bottle", "shoe", "hat", "lamp", "rock", "pencil",
            "tomato", "leaf", "feather", "shell", "teddy bear", "clock", "car", "bicycle", "boat", "tree"}
COUNT_PHRASES = [
    "a single object", "one object", "two objects", "three objects", "many objects", "a lot of objects",
    "a crowd of people", "an empty image", "nothing in the image", "a large number of small things",
    "a few scattered items", "a collection of items", "pairs of objects", "a repeated object",
    "a lone tree", "a single person", "one person alone", "two people", "three people", "four people",
    "five people", "a group of people", "a big crowd", "a large flock of birds", "a herd of cattle",
    "a swarm of bees", "a school of fish", "a pack of wolves", "a stack of books", "a pile of leaves",
    "a bunch of grapes", "a bunch of flowers", "a fleet of ships", "a row of houses", "a line of cars",
    "a single leaf", "counting numbers", "a number of dots", "two dogs", "two cats", "three birds",
    "two horses", "three cars", "four chairs", "five balloons", "two cups",
]
OBJECTS = [
    "chair", "table", "sofa", "lamp", "clock", "book", "cup", "mug", "bottle", "phone", "laptop",
    "computer", "television", "camera", "pair of headphones", "guitar", "piano", "violin", "drum", "trumpet",
    "umbrella", "backpack", "suitcase", "handbag", "shoe", "boot", "hat", "key", "pair of scissors", "knife",
    "fork", "spoon", "plate", "bowl", "pen", "pencil", "notebook", "toy", "teddy bear", "doll", "ball",
    "balloon", "kite", "candle", "mirror", "window", "door", "bed", "pillow", "vase", "plant", "tree",
    "rock", "shell", "feather", "leaf", "watch", "ring", "necklace", "crown", "sword", "shield", "flag",
    "map", "globe", "telescope", "microscope", "ladder", "hammer", "wrench", "toothbrush", "light bulb",
    "fan", "refrigerator", "oven", "basket", "box", "gift", "trophy", "medal", "coin", "envelope",
    "bench", "fence", "mailbox", "trash can", "traffic light", "fire hydrant", "robot", "chess board",
    "pair of dice", "puzzle", "skull", "anchor", "bell", "compass", "hourglass", "lantern", "magnifying glass",
    "paintbrush", "typewriter", "record player", "radio", "microphone", "keyboard", "mouse",
    "remote control", "tennis racket", "baseball bat", "skateboard", "surfboard", "snowman", "scarecrow",
    "cactus", "sunflower", "rose", "tulip", "palm tree", "pine tree", "mushroom", "pumpkin", "wheel",
    "tire", "rope", "chain", "pillar", "staircase", "swing", "bridge", "statue", "fountain", "tombstone",
]
OBJECT_TEMPLATES = ["an old {n}", "a broken {n}", "a close-up of {a}", "a photo of {a}", "a toy {n}", "a small {n}",
                    "a giant {n}", "{a} on a white background", "a drawing of {a}"]
#: templates that place an object somewhere: only for things that can stand on a table or a shelf
PLACED_TEMPLATES = ["{a} on a table", "{a} on the floor", "{a} in a room", "{a} on a shelf"]
LARGE_OBJECTS = {
    "sofa", "bed", "door", "window", "tree", "piano", "refrigerator", "oven", "bench", "fence", "mailbox",
    "traffic light", "fire hydrant", "staircase", "swing", "bridge", "statue", "fountain", "tombstone",
    "pillar", "palm tree", "pine tree", "scarecrow", "snowman", "ladder", "table", "telescope", "rock",
    "trash can", "robot", "drum", "television", "tire", "wheel", "cactus",
}
ANIMALS = [
    "dog", "cat", "horse", "cow", "sheep", "goat", "pig", "chicken", "duck", "bird", "parrot", "owl",
    "eagle", "penguin", "flamingo", "swan", "pigeon", "seagull", "hummingbird", "peacock", "fish",
    "goldfish", "shark", "whale", "dolphin", "octopus", "crab", "lobster", "turtle", "frog", "snake",
    "lizard", "crocodile", "lion", "tiger", "leopard", "cheetah", "elephant", "giraffe", "zebra", "monkey",
    "gorilla", "chimpanzee", "bear", "polar bear", "panda", "koala", "kangaroo", "fox", "wolf", "deer",
    "moose", "rabbit", "squirrel", "mouse", "hamster", "hedgehog", "bat", "butterfly", "bee", "spider",
    "ant", "ladybug", "snail", "jellyfish", "camel", "hippopotamus", "rhino", "seal", "otter", "raccoon",
    "puppy", "kitten", "lamb", "pony", "donkey", "buffalo", "bison", "llama", "sloth", "beetle",
    "dragonfly", "starfish", "seahorse", "stingray", "dinosaur", "unicorn", "dragon",
]
MAMMALS = ["dog", "cat", "horse", "cow", "sheep", "goat", "pig", "lion", "tiger", "leopard", "cheetah",
           "elephant", "giraffe", "zebra", "monkey", "gorilla", "bear", "polar bear", "panda", "koala",
           "kangaroo", "fox", "wolf", "deer", "rabbit", "squirrel", "puppy", "kitten", "lamb", "pony",
           "donkey", "camel", "llama", "raccoon", "otter", "seal", "hedgehog"]
ANIMAL_ACTIONS = ["sleeping", "eating", "running", "resting", "looking at the camera", "lying on the grass",
                  "standing in a field", "playing", "yawning", "in the snow", "drinking water",
                  "walking on a path", "in a cage", "jumping"]
ANIMAL_COLOURED = [
    ("black", "dog"), ("white", "dog"), ("brown", "dog"), ("golden", "dog"), ("black", "cat"),
    ("white", "cat"), ("orange", "cat"), ("gray", "cat"), ("white", "horse"), ("brown", "horse"),
    ("black", "horse"), ("red", "bird"), ("blue", "bird"), ("yellow", "bird"), ("black", "bird"),
    ("white", "rabbit"), ("brown", "rabbit"), ("orange", "fish"), ("blue", "fish"), ("green", "frog"),
    ("red", "fox"), ("gray", "wolf"), ("black", "bear"), ("brown", "bear"), ("pink", "flamingo"),
    ("white", "swan"), ("black", "swan"), ("green", "snake"), ("red", "crab"), ("blue", "butterfly"),
    ("yellow", "butterfly"), ("white", "sheep"), ("black", "sheep"), ("pink", "pig"), ("spotted", "dog"),
    ("striped", "cat"), ("fluffy", "cat"), ("fluffy", "dog"), ("tiny", "mouse"), ("huge", "elephant"),
]
ANIMAL_PHRASES = [
    "a pet", "a wild animal", "a farm animal", "a zoo", "an aquarium", "a bird in flight",
    "a dog and a cat", "a cat sitting on a windowsill", "a dog catching a frisbee", "a horse galloping",
    "a fish underwater", "a bird on a branch", "a nest with eggs", "animal tracks in the snow",
    "a safari", "wildlife photography", "a bird's nest", "a spider web", "a beehive",
    "a dog wearing a sweater", "a cat in a box", "a mother and baby animal", "an animal skeleton",
    "a stuffed animal", "an insect on a leaf", "a fish tank", "a horse and rider", "a herd of elephants",
    "a flock of sheep", "a dog on a leash", "a cat playing with yarn",
]
PEOPLE = [
    "baby", "toddler", "child", "boy", "girl", "teenager", "young woman", "young man", "woman", "man",
    "elderly woman", "elderly man", "old man", "old woman", "grandmother", "grandfather", "little girl",
    "little boy", "middle-aged man", "middle-aged woman",
]
ROLES = [
    "doctor", "nurse", "chef", "firefighter", "police officer", "soldier", "teacher", "student", "farmer",
    "pilot", "astronaut", "construction worker", "musician", "guitarist", "singer", "dancer", "painter",
    "athlete", "football player", "basketball player", "tennis player", "swimmer", "runner", "cyclist",
    "skier", "surfer", "businessman", "businesswoman", "scientist", "judge", "mechanic", "waiter",
    "photographer", "fisherman", "clown", "magician", "king", "queen", "priest", "monk", "bride",
    "groom", "tourist", "cowboy", "knight", "pirate", "ballerina", "boxer", "lifeguard", "baker",
    "carpenter", "gardener", "shopkeeper", "mail carrier", "referee", "surgeon", "detective", "diver",
    "climber", "drummer", "conductor", "model", "soldier in uniform", "sailor", "nun", "hiker",
]
ACTIVITIES = [
    "running", "walking", "swimming", "reading a book", "cooking", "eating", "drinking coffee",
    "sleeping", "laughing", "smiling", "crying", "dancing", "singing", "playing guitar", "playing the piano",
    "riding a bicycle", "riding a horse", "driving a car", "talking on the phone", "using a laptop",
    "taking a selfie", "writing", "painting", "hiking", "climbing a wall", "jumping", "sitting on a bench",
    "waiting for a bus", "shopping", "gardening", "fishing", "skiing", "surfing", "skateboarding",
    "playing football", "playing chess", "holding an umbrella", "hugging", "waving", "working at a desk",
    "giving a speech", "taking a photo", "doing yoga", "lifting weights", "praying", "meditating",
    "looking out of a window", "walking a dog", "carrying a box", "cleaning", "washing dishes",
    "brushing teeth", "playing video games", "watching television", "typing on a keyboard",
    "standing in the rain", "sitting alone", "blowing out candles", "throwing a ball", "pointing",
]
CLOTHING = [
    "wearing a hat", "wearing glasses", "wearing sunglasses", "wearing a suit", "wearing a dress",
    "wearing a uniform", "wearing a helmet", "wearing a mask", "wearing a scarf", "wearing a hoodie",
    "wearing a red jacket", "wearing jeans", "in a wedding dress", "in a swimsuit", "wearing a backpack",
    "wearing a crown", "wearing boots", "in traditional clothing", "wearing a costume",
    "wearing headphones", "with a beard", "with long hair", "with curly hair", "with tattoos",
    "with red hair", "with gray hair", "wearing a white shirt", "wearing a black coat", "in pajamas",
    "wearing a raincoat", "wearing a tie", "wearing a cap", "wearing gloves", "in a lab coat",
    "in sports clothes", "wearing a winter coat", "wearing a yellow raincoat", "wearing a kimono",
    "in a tuxedo", "wearing earrings", "wearing a necklace", "barefoot", "wearing an apron",
]
YOUNG = {"baby", "toddler"}
CHILDREN = {"baby", "toddler", "child", "boy", "girl", "little girl", "little boy"}
MALE = {"man", "young man", "elderly man", "old man", "grandfather", "middle-aged man"}
FEMALE = {"woman", "young woman", "elderly woman", "old woman", "grandmother", "middle-aged woman"}
YOUNG_ACTIVITIES = {"sleeping", "laughing", "smiling", "crying", "eating", "playing", "walking", "jumping",
                    "pointing", "waving", "hugging", "sitting alone", "blowing out candles", "throwing a ball"}
CHILD_CLOTHING = {"wearing a hat", "wearing glasses", "wearing sunglasses", "wearing a scarf", "wearing a hoodie",
                  "wearing a red jacket", "in a swimsuit", "wearing a backpack", "wearing a crown", "wearing boots",
                  "wearing a costume", "with curly hair", "with red hair", "in pajamas", "wearing a raincoat",
                  "wearing a cap", "wearing gloves", "wearing a winter coat", "wearing a yellow raincoat",
                  "barefoot", "with long hair", "wearing a helmet"}


def _can_wear(person: str, clothing: str) -> bool:
    if person in CHILDREN:
        return clothing in CHILD_CLOTHING
    if clothing == "with a beard":
        return person in MALE
    if clothing in ("in a wedding dress", "wearing a dress", "wearing earrings"):
        return person in FEMALE
    return True


PEOPLE_PHRASES = [
    "a portrait", "a close-up of a face", "a face", "a smiling face", "a crowd of people", "a family",
    "a couple", "a happy couple", "friends having fun", "a family dinner", "a wedding", "a birthday party",
    "a business meeting", "a classroom full of students", "a sports team", "a concert crowd",
    "a person from behind", "a silhouette of a person", "hands", "a hand holding something", "feet",
    "an eye", "a pair of eyes", "lips", "a person's shadow", "a group photo", "a selfie",
    "people walking on a street", "people at the beach", "people in an office", "a parade",
    "a protest", "a marathon", "a person with an umbrella", "a person in the distance",
    "an athlete in action", "a soldier saluting", "a mother holding a baby", "a father and son",
    "a mother and daughter", "twins", "siblings", "a man and a woman", "children playing",
    "a child drawing", "a baby crying", "a teenager with a phone", "an elderly couple",
    "a famous person", "a celebrity on a red carpet", "a politician", "a fashion model on a runway",
    "a person in a wheelchair", "a superhero", "a person wearing a mask", "a masked face",
]
INDOOR = [
    "kitchen", "living room", "bedroom", "bathroom", "office", "classroom", "library", "hospital room",
    "restaurant", "cafe", "bar", "supermarket", "shopping mall", "museum", "church", "gym", "theater",
    "airport terminal", "train station", "subway station", "factory", "warehouse", "garage", "laboratory",
    "prison cell", "hotel lobby", "basement", "attic", "concert hall", "hallway", "elevator", "bakery",
    "bookstore", "clothing store", "dining room", "waiting room", "server room", "art gallery",
    "swimming pool", "nursery", "studio", "workshop", "locker room", "casino", "cinema",
]
OUTDOOR_URBAN = [
    "city street", "busy intersection", "city skyline", "parking lot", "alley", "market", "town square",
    "bridge", "harbor", "playground", "park", "suburb", "highway", "rooftop", "construction site",
    "gas station", "railway", "train platform", "village", "small town", "old town", "port", "downtown",
    "neighborhood", "sidewalk", "backyard", "front yard", "cemetery", "stadium", "amusement park",
    "carnival", "street market", "industrial area", "rooftop terrace",
]
NATURE = [
    "forest", "jungle", "desert", "beach", "ocean", "lake", "river", "waterfall", "mountain", "valley",
    "meadow", "field of flowers", "wheat field", "cave", "glacier", "volcano", "island", "canyon", "swamp",
    "coral reef", "savanna", "countryside", "farm", "vineyard", "garden", "hill", "pond", "cliff",
    "rainforest", "prairie", "tundra", "bamboo forest", "pine forest", "rocky coast",
    "seashore", "mountain lake", "rice field", "orchard", "oasis", "riverbank", "hillside", "sand dune",
]
WEATHER = ["sunny", "rainy", "snowy", "foggy", "cloudy", "stormy", "windy", "misty", "overcast", "hazy"]
WEATHER_PHRASES = [
    "a thunderstorm", "lightning in the sky", "a rainbow over a field", "heavy rain", "a snowstorm",
    "falling snow", "hail", "a tornado", "a hurricane", "a clear blue sky", "dark storm clouds",
    "fluffy white clouds", "fog over a lake", "raindrops on a window", "a puddle after rain",
    "frost on the grass", "icicles", "a sandstorm", "a heat wave", "sunshine", "a sunny day",
    "a rainy day", "a snowy day", "a cloudy day", "a foggy morning", "a windy day", "wet streets",
    "an overcast sky", "storm clouds gathering", "a flood", "a drought",
]
TIMES = ["at sunrise", "at dawn", "in the morning", "at noon", "in the afternoon", "at sunset", "at dusk",
         "at twilight", "at night", "at midnight", "during the golden hour", "during the blue hour"]
TIME_PHRASES = [
    "photo taken at night", "photo taken during the day", "photo taken at sunset", "photo taken at sunrise",
    "a night scene", "a daytime scene", "a starry night sky", "the Milky Way", "a full moon",
    "a crescent moon", "a sunset", "a sunrise", "an orange sky at dusk", "city lights at night",
    "a dark night", "early morning light", "late afternoon", "a midnight scene", "nighttime",
    "the sun low on the horizon", "the sun high in the sky", "a solar eclipse", "the northern lights",
    "a long shadow in the evening", "fireworks at night",
]
SEASONS = ["in spring", "in summer", "in autumn", "in winter", "in the fall"]
SEASON_PHRASES = [
    "spring", "summer", "autumn", "winter", "autumn leaves", "fall foliage", "spring blossoms",
    "cherry blossoms", "a summer day", "a winter day", "a winter landscape", "a summer vacation",
    "a snowy winter", "the first snow", "blooming flowers in spring", "falling leaves", "a hot summer",
    "a cold winter morning", "harvest season", "Christmas decorations", "a Halloween scene",
    "an Easter egg hunt", "a snow-covered tree", "a frozen lake", "a summer festival",
]
SCENE_PHRASES = [
    "an indoor scene", "an outdoor scene", "an urban scene", "a rural scene", "a natural landscape",
    "a cityscape", "a landscape", "a seascape", "an interior", "an exterior", "a room", "an empty room",
    "a messy room", "a tidy room", "a crowded place", "an empty street", "a quiet place",
    "a busy place", "a remote place", "a tropical place", "a cold place", "a hot place",
    "an underwater scene", "outer space", "a planet", "the surface of the moon", "a view from space",
    "a fantasy world", "a post-apocalyptic city", "a futuristic city", "a medieval village",
    "a battlefield", "a disaster scene", "ruins", "a construction area", "a sports field",
    "a tennis court", "a basketball court", "a soccer field", "a golf course", "a ski slope",
    "a campsite", "a picnic", "a road trip", "a train journey", "an airport runway",
]
ART_STYLES = [
    "photograph", "painting", "oil painting", "watercolor painting", "acrylic painting", "pencil sketch",
    "charcoal drawing", "ink drawing", "line drawing", "cartoon", "comic strip", "anime drawing",
    "manga panel", "3D render", "CGI image", "pixel art image", "vector illustration", "digital painting",
    "concept art", "collage", "mosaic", "stained glass window", "graffiti drawing", "mural", "woodcut print",
    "engraving", "etching", "linocut", "screen print", "pop art image", "impressionist painting",
    "cubist painting", "surrealist painting", "abstract painting", "minimalist illustration",
    "low poly render", "claymation still", "origami model", "marble sculpture", "bronze sculpture",
    "embroidery", "tapestry", "blueprint", "infographic", "diagram", "chart", "screenshot", "meme",
    "poster", "postcard", "X-ray image", "thermal image", "infrared photo", "microscope image",
    "satellite image", "polaroid photo", "film photograph", "vintage photo", "sepia photo",
    "black and white photo", "HDR photo", "long exposure photo", "double exposure", "children's drawing",
    "doodle", "caricature", "silhouette", "tattoo design", "emoji", "icon", "sticker", "clip art image",
    "Renaissance painting", "Baroque painting", "ukiyo-e print", "Chinese ink painting",
    "art nouveau poster", "art deco poster", "retro 1980s illustration", "vaporwave image",
    "steampunk illustration", "cyberpunk illustration", "gothic illustration", "psychedelic painting",
    "chalk drawing", "crayon drawing", "pastel drawing", "fresco", "icon painting", "storyboard",
    "architectural drawing", "technical drawing", "botanical illustration", "scientific illustration",
    "children's book illustration", "fashion illustration", "propaganda poster", "movie poster",
    "album cover", "magazine cover", "comic book cover", "video game screenshot", "rendering",
    "sand sculpture", "ice sculpture", "wood carving", "paper cutout", "silhouette cutout",
    "glitch art image", "ASCII art image", "neon sign artwork", "street art", "folk art painting",
    "aboriginal dot painting", "Islamic geometric art", "calligraphy", "hand-drawn sketch",
]
NO_SUBJECT_STYLES = {
    "screenshot", "meme", "chart", "diagram", "infographic", "emoji", "icon", "sticker", "microscope image",
    "satellite image", "calligraphy", "street art", "storyboard", "architectural drawing", "technical drawing",
    "botanical illustration", "scientific illustration", "neon sign artwork", "ASCII art image", "blueprint",
    "video game screenshot", "album cover", "magazine cover", "comic book cover", "aboriginal dot painting",
    "Islamic geometric art", "thermal image", "infrared photo", "X-ray image", "glitch art image",
    "vaporwave image", "propaganda poster", "fashion illustration", "double exposure", "icon painting",
}
ART_SUBJECTS = [
    "a cat", "a dog", "a city", "a face", "a landscape", "a flower", "a house", "a car", "a tree",
    "a boat", "a bird", "a mountain", "a woman", "a man", "a child", "a castle", "a horse", "a lighthouse",
    "a bowl of fruit", "a street", "a forest", "the sea", "a robot", "a dragon", "a skull", "a bicycle",
    "a teapot", "a church", "a bridge", "a village", "an old man", "a ballerina", "a rose", "an owl",
]
LIGHTING = [
    "backlit", "warm light", "cold light", "harsh shadows", "soft light", "natural light", "studio lighting",
    "neon lights", "candlelight", "moonlight", "sunlight through the trees", "dim lighting", "a dark image",
    "a bright image", "an overexposed photo", "an underexposed photo", "high contrast", "low contrast",
    "a spotlight", "a silhouette against the sun", "lens flare", "dramatic lighting", "rim lighting",
    "fluorescent light", "golden light", "firelight", "a glowing object", "shadows on the wall",
    "light rays", "sunbeams", "a light leak", "colored lights", "fairy lights", "a flash photo",
    "red light", "blue light", "green light", "purple light", "a dark room with a single light",
    "light and shadow", "a strong shadow", "a soft shadow", "reflections on water", "a glowing screen",
    "a bright window in a dark room", "a well-lit room", "a dimly lit room", "streetlights",
    "car headlights", "a lamp glowing", "a flashlight beam", "a lighthouse beam", "glowing embers",
    "light from below", "light from above", "side lighting", "a foggy glow", "sparkles of light",
]
LIT_SUBJECTS = ["a face", "a room", "a street", "a forest", "a portrait", "a city", "a statue", "a table",
                "a stage", "a building", "a field", "a bottle", "a person", "a flower"]
LIGHT_SOURCES = ["candlelight", "moonlight", "sunlight", "neon light", "a single lamp", "a fire",
                 "a spotlight", "a window", "a flashlight", "streetlights", "a phone screen", "warm light",
                 "cold blue light", "red light"]
CAMERA = [
    "a close-up", "an extreme close-up", "a macro photo", "an aerial view", "a bird's-eye view",
    "a drone shot", "a wide angle shot", "a fisheye lens photo", "a panorama", "a telephoto shot",
    "a low angle shot", "a high angle shot", "a top-down view", "a side view", "a front view",
    "a rear view", "a portrait orientation photo", "a landscape orientation photo", "motion blur",
    "a blurry photo", "an out of focus photo", "shallow depth of field", "bokeh", "a tilt-shift photo",
    "a point of view shot", "security camera footage", "a dashcam image", "an underwater photo",
    "a night vision image", "a grainy photo", "a noisy photo", "a time-lapse", "a panning shot",
    "a reflection in a mirror", "a cropped image", "a tilted horizon", "a rule of thirds composition",
    "a sharp photo", "a low resolution image", "a high resolution photo", "a pixelated image",
    "a compressed image with artifacts", "a photo with a watermark", "a photo through a window",
    "a photo through a fence", "a view through a keyhole", "a view through binoculars",
    "a photo taken from a car", "a photo taken from an airplane", "a street photo", "a candid photo",
    "a posed photo", "a studio photo", "a stock photo", "an amateur photo", "a professional photo",
    "a snapshot", "a film still", "a frame from a video", "a webcam image", "a scanned document",
    "a photo of a screen", "a photo of a photo", "a zoomed-in image", "a zoomed-out view",
    "a wide shot", "a medium shot", "a full body shot", "a headshot", "an over the shoulder shot",
    "a Dutch angle", "a shaky photo", "a long exposure with light trails", "a vignette",
    "a split focus photo", "a mirror selfie", "a slow shutter photo", "a freeze frame",
]
CAMERA_TEMPLATES = ["a blurry photo of {a}", "a side view of {a}", "a low angle shot of {a}",
                    "a photo of {a} taken from far away", "a cropped photo of {a}", "a reflection of {a} in water",
                    "an out of focus photo of {a}", "a black and white photo of {a}", "a grainy photo of {a}"]
CAMERA_SUBJECTS = ["a car", "a dog", "a cat", "a building", "a person", "a bridge", "a boat", "a tree", "a horse",
                   "a lighthouse", "a bicycle", "a child", "a church", "a train", "a bird"]
#: views for small things, and views for large places
CLOSE_TEMPLATES = ["a close-up of {a}", "a macro photo of {a}", "an extreme close-up of {a}", "a sharp photo of {a}"]
CLOSE_SUBJECTS = ["a flower", "a face", "an eye", "a leaf", "an insect", "a coin", "a hand", "a watch", "a feather",
                  "a snowflake", "a drop of water", "a butterfly wing", "a spider", "a keyboard", "a fingerprint"]
WIDE_TEMPLATES = ["an aerial view of {a}", "a top-down view of {a}", "a wide angle photo of {a}", "a drone shot of {a}",
                  "a panorama of {a}", "a satellite view of {a}"]
WIDE_SUBJECTS = ["a city", "a forest", "a beach", "a road", "a river", "a field", "a crowd", "a mountain",
                 "a stadium", "a harbor", "a farm", "an island", "a parking lot", "a desert", "a village"]
MOODS = [
    "happy", "sad", "angry", "calm", "peaceful", "joyful", "lonely", "nostalgic", "romantic", "mysterious",
    "eerie", "creepy", "gloomy", "cheerful", "playful", "tense", "chaotic", "serene", "melancholic",
    "energetic", "cozy", "dreamy", "festive", "dramatic", "ominous", "hopeful", "whimsical", "funny",
    "cute", "scary", "tranquil", "relaxing", "uplifting", "dark", "somber", "magical", "spooky",
    "majestic", "intimate", "warm", "cold", "bleak", "idyllic", "surreal", "intense", "quiet",
]
MOOD_TEMPLATES = ["a {m} atmosphere", "a {m} scene", "a {m} mood", "a {m} image", "a {m} landscape",
                  "a {m} painting", "a {m} photo"]
EMOTIONS = ["happy", "sad", "angry", "surprised", "scared", "disgusted", "worried", "proud", "bored",
            "excited", "tired", "confused", "shocked", "nervous", "relaxed", "thoughtful", "grumpy",
            "embarrassed", "frustrated", "amazed", "jealous", "shy", "laughing", "crying", "smiling",
            "frowning", "screaming", "serious", "anxious", "content"]
EMOTION_WHO = ["child", "woman", "man", "baby", "face", "person", "girl", "boy", "old man", "dog",
               "student", "crowd", "teenager"]
EMOTION_PHRASES = [
    "a facial expression", "an emotional moment", "tears of joy", "a hug between friends", "a tender moment",
    "a scream", "a frown", "a big smile", "a wink", "a grimace", "a surprised expression",
    "a worried look", "an angry face", "a sad face", "a happy face", "a neutral expression",
    "a person in love", "a celebration", "a moment of victory", "a moment of defeat", "grief",
    "a feeling of loneliness", "a feeling of freedom", "excitement", "fear", "joy", "sadness", "anger",
    "surprise", "disgust", "boredom", "nostalgia", "awe", "a sense of wonder",
]
LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
TEXT_PHRASES = [
    "an image with a lot of text", "an image with a little text", "a sign with text", "handwritten text",
    "a page of a book", "a newspaper", "a handwritten letter", "a street sign", "a stop sign",
    "a license plate", "a price tag", "a receipt", "a menu", "a book cover", "a calendar",
    "a neon sign with words", "bold capital letters", "cursive handwriting", "a caption",
    "a title", "a spreadsheet", "computer code on a screen", "a math equation on a blackboard",
    "Roman numerals", "a barcode", "a QR code", "letters in a row", "subtitles", "a quote", "a text message",
    "a typewriter page", "chalk writing on a blackboard", "a street name sign", "a highway sign",
    "a banner with a slogan", "a billboard", "letter tiles", "a word written in the sand",
    "a word written on a wall", "a label on a bottle", "a product label", "a warning label",
    "a document", "a form", "a contract", "a certificate", "a ticket", "a passport page", "a postcard with writing",
    "a crossword puzzle", "a word search puzzle", "sheet music", "a poem", "a handwritten note",
    "a sticky note", "a chalkboard menu", "a whiteboard with writing", "a shop sign", "a sign above a door",
    "a name tag", "a digital clock", "a scoreboard", "a speedometer", "a countdown", "a thermometer",
    "a ruler with numbers", "a dial with numbers", "a phone number", "a date", "a year written in numbers",
    "large numbers", "a sequence of numbers", "a table of numbers", "a house number", "a jersey number",
    "a page number", "a price", "a graph with labels", "text on a T-shirt", "text on a mug",
    "a typed letter", "a printed page", "a magazine page", "a comic speech bubble", "a dictionary",
    "an alphabet chart", "a keyboard with letters", "a street address", "graffiti letters", "a tattoo of a word",
    "an empty page", "a blank sign", "a logo with text", "a brand name", "a sign in a foreign language",
    "a sign that says open", "a sign that says exit", "a sign that says sale", "the word love",
    "the word stop", "the word hello", "the word danger", "the word welcome",
]
LANGUAGES = ["Chinese", "Japanese", "Arabic", "Russian", "Hebrew", "Korean", "Greek", "Hindi", "English",
             "French", "German", "Spanish", "Thai", "Latin"]
TEXT_COLOURS = ["red", "white", "black", "blue", "yellow", "green", "gold"]
SYMBOLS = [
    "heart symbol", "peace sign", "yin and yang symbol", "dollar sign", "euro sign", "question mark",
    "exclamation mark", "at sign", "hashtag", "ampersand", "arrow", "check mark", "cross mark",
    "recycling symbol", "biohazard symbol", "radiation symbol", "skull and crossbones", "warning sign",
    "no smoking sign", "wheelchair symbol", "power button", "play button", "wifi symbol", "music note",
    "infinity symbol", "copyright symbol", "plus sign", "minus sign", "equals sign", "percent sign",
    "red cross symbol", "crescent moon symbol", "star symbol", "national flag", "company logo",
    "sports team logo", "brand logo", "emblem", "coat of arms", "badge", "seal", "rubber stamp",
    "traffic sign", "road sign", "map pin icon", "smiley face", "emoji", "hieroglyph", "zodiac sign",
    "chess piece", "gear icon", "home icon", "trash can icon", "padlock icon", "battery icon",
    "lightning bolt symbol", "male symbol", "female symbol", "pi symbol", "sun symbol", "snowflake symbol",
    "four-leaf clover", "horseshoe", "anchor symbol", "crown symbol", "eye symbol", "hand gesture",
    "thumbs up", "victory sign", "ok sign", "pointing finger", "cursor arrow", "loading icon",
    "traffic light symbol", "pedestrian crossing sign", "speed limit sign", "one way sign", "exit sign",
    "fire exit sign", "first aid sign", "parking sign", "bicycle lane sign", "no entry sign",
]
FLAGS = ["American", "British", "Japanese", "Canadian", "French", "German", "Italian", "Brazilian", "Indian",
         "Chinese", "Mexican", "Spanish", "Swedish", "Greek", "South Korean", "Australian", "Irish", "Turkish",
         "pirate", "rainbow", "checkered", "white", "red"]
SYMBOL_PHRASES = [
    "a logo", "a logo on a shirt", "a logo on a car", "a logo on a building", "a symbol", "an icon",
    "a sign", "a flag waving in the wind", "flags of many countries", "a religious symbol",
    "a mathematical symbol", "a currency symbol", "a punctuation mark", "an arrow pointing left",
    "an arrow pointing right", "an arrow pointing up", "an arrow pointing down", "a circular arrow",
    "a set of icons", "an app icon", "a button", "a sticker on a laptop", "a patch on a jacket",
    "a medal with a ribbon", "a shield with a crest", "a pin badge", "a mascot", "a trademark",
    "a hand-drawn symbol", "an ancient symbol", "a cross on a hill", "a monogram",
]
FOODS = [
    "a pizza", "a slice of pizza", "a burger", "a hot dog", "a sandwich", "a salad", "a bowl of soup",
    "sushi", "a bowl of ramen", "a plate of pasta", "spaghetti", "a steak", "fried chicken", "french fries",
    "tacos", "a burrito", "dumplings", "curry", "a bowl of rice", "bread", "a loaf of bread", "a croissant",
    "a bagel", "pancakes", "waffles", "a donut", "a cake", "a birthday cake", "a cupcake", "cookies",
    "ice cream", "an ice cream cone", "chocolate", "candy", "a pie", "cheese", "fried eggs", "bacon",
    "an apple", "a banana", "an orange", "strawberries", "grapes", "a watermelon", "a slice of watermelon",
    "a pineapple", "a lemon", "cherries", "an avocado", "tomatoes", "carrots", "broccoli", "corn",
    "mushrooms", "potatoes", "onions", "peppers", "a cup of coffee", "a cup of tea", "a glass of wine",
    "a glass of beer", "orange juice", "a glass of milk", "a smoothie", "a cocktail", "popcorn",
    "a bowl of cereal", "a fruit basket", "vegetables", "a plate of food", "a breakfast", "a lunch box",
    "a dinner plate", "a dessert", "a kebab", "a seafood platter", "shrimp", "a lobster dinner",
    "noodles", "a bowl of porridge", "yogurt", "honey", "jam on toast", "a sausage", "a roast chicken",
    "a barbecue", "grilled vegetables", "a cheese board", "olives", "nuts", "a chocolate bar", "lollipops",
    "macarons", "a muffin", "a pretzel", "a taco", "a bento box", "a hamburger and fries",
]
FOOD_TEMPLATES = ["{f}", "{f} on a wooden table", "a close-up of {f}", "{f} in a restaurant", "a top-down photo of {f}",
                  "a photo of {f}", "homemade {f}", "{f} on a white plate", "a painting of {f}", "fresh {f}"]
FOOD_PHRASES = [
    "food", "a meal", "fast food", "street food", "a feast", "a kitchen counter with ingredients",
    "a chef cooking", "a dinner table", "a buffet", "a food market", "a grocery store shelf",
    "a fridge full of food", "an empty plate", "leftovers", "a picnic basket", "a food truck",
    "a bakery window", "a cooking pot on a stove", "a frying pan", "spices", "a recipe", "healthy food",
    "junk food", "a vegan meal", "a bowl of fruit", "a glass of water", "a bottle of wine", "a cup of hot chocolate",
]
VEHICLES = [
    "car", "sports car", "truck", "bus", "school bus", "taxi", "police car", "ambulance", "fire truck",
    "motorcycle", "scooter", "bicycle", "train", "tram", "subway train", "airplane", "helicopter",
    "fighter jet", "hot air balloon", "rocket", "boat", "sailboat", "ship", "cruise ship", "canoe", "kayak",
    "submarine", "tractor", "bulldozer", "excavator", "limousine", "van", "pickup truck", "jeep",
    "race car", "vintage car", "horse carriage", "cable car", "spaceship", "yacht", "ferry", "speedboat",
    "steam locomotive", "freight train", "delivery truck", "garbage truck", "camper van", "tank",
    "golf cart", "forklift", "snowmobile", "double-decker bus", "rickshaw", "gondola", "glider", "blimp",
]
LAND_VEHICLES = ["car", "sports car", "truck", "bus", "school bus", "taxi", "police car", "ambulance",
                 "fire truck", "motorcycle", "scooter", "bicycle", "tractor", "limousine", "van",
                 "pickup truck", "jeep", "race car", "vintage car", "delivery truck", "camper van"]
VEHICLE_TEMPLATES = ["{a}", "an old {n}", "a toy {n}", "a broken {n}", "a photo of {a}", "{a} at night",
                     "a drawing of {a}", "a model {n}", "a new {n}", "a close-up of {a}"]
LAND_TEMPLATES = ["{a} parked on the street", "{a} on a highway", "{a} driving through a city",
                  "{a} in the snow", "{a} on a dirt road", "an abandoned {n}", "{a} in traffic"]
VEHICLE_PHRASES = [
    "a traffic jam", "a car crash", "a busy road", "a parking garage", "an airport", "planes on a runway",
    "a train station platform", "a marina full of boats", "boats in a harbor", "a car dealership",
    "a race track", "a bike rack", "a bus stop", "a gas pump", "a car wash", "a flat tire", "a steering wheel",
    "a car dashboard", "a cockpit", "the wing of an airplane", "a train window view", "railroad tracks",
    "a shipwreck", "a junkyard", "a convoy of trucks", "an empty parking lot", "a wheel",
]
BUILDINGS = [
    "house", "skyscraper", "castle", "church", "cathedral", "mosque", "temple", "pagoda", "lighthouse",
    "barn", "cabin", "log cabin", "hut", "tent", "apartment building", "office building", "palace",
    "bridge", "tower", "windmill", "factory", "warehouse", "stadium", "school", "hospital", "farmhouse",
    "cottage", "mansion", "igloo", "pyramid", "dam", "greenhouse", "treehouse", "shop", "hotel",
    "train station", "airport", "museum", "library", "fort", "monument", "statue", "fountain", "villa",
    "bungalow", "chapel", "clock tower", "water tower", "power plant", "gas station", "prison", "shed",
    "skyscraper under construction", "row house", "townhouse", "ancient temple", "amphitheater",
]
BUILDING_TEMPLATES = ["{a}", "an old {n}", "a modern {n}", "an abandoned {n}", "{a} at night",
                      "{a} in the snow", "the facade of {a}", "the inside of {a}", "{a} on a hill",
                      "{a} by the sea", "a drawing of {a}", "a tall {n}", "a small {n}", "a ruined {n}",
                      "a photo of {a}", "{a} in the distance", "{a} under a blue sky"]
BUILDING_PHRASES = [
    "architecture", "modern architecture", "gothic architecture", "a building facade", "a city block",
    "rooftops", "a balcony", "a staircase", "a doorway", "an archway", "columns", "a dome", "a spire",
    "a brick wall", "a window with curtains", "an open door", "a closed door", "a front porch",
    "a garden gate", "a courtyard", "an interior design", "a floor plan", "a building on fire",
    "a collapsed building", "scaffolding", "a crane over a construction site", "a famous landmark",
    "an ancient ruin", "a row of colorful houses", "glass windows of an office tower",
]
CONCEPTS = [
    "freedom", "love", "peace", "war", "time", "death", "hope", "loneliness", "friendship", "power",
    "wealth", "poverty", "danger", "speed", "technology", "science", "nature", "religion", "education",
    "health", "sports", "music", "travel", "history", "the future", "the past", "childhood", "old age",
    "family", "competition", "teamwork", "success", "failure", "growth", "change", "balance", "chaos",
    "order", "infinity", "silence", "luxury", "celebration", "mystery", "innocence", "justice", "violence",
    "safety", "pollution", "climate change", "globalization", "democracy", "communication", "creativity",
    "imagination", "knowledge", "memory", "dreams", "courage", "beauty", "simplicity", "complexity",
    "life", "birth", "strength", "weakness", "isolation", "connection", "movement", "stillness",
    "progress", "tradition", "modernity", "art", "money", "work", "leisure", "home", "distance",
    "energy", "light", "darkness", "happiness", "sadness", "fear", "trust", "faith", "risk",
    "sustainability", "recycling", "consumerism", "industry", "agriculture", "medicine", "law",
    "politics", "the economy", "entertainment", "fashion", "mathematics", "physics", "astronomy",
]
CONCEPT_TEMPLATES = ["{c}", "an image about {c}", "a symbol of {c}", "the concept of {c}",
                     "a representation of {c}", "an image that evokes {c}", "a metaphor for {c}"]
IMAGE_PHRASES = [
    "a simple image", "a cluttered image", "a busy image", "a minimalist image", "an abstract image",
    "a detailed image", "a realistic image", "an unrealistic image", "a strange image", "a funny image",
    "a beautiful image", "an ugly image", "a boring image", "an interesting image", "a famous image",
    "a fake image", "an edited photo", "a photoshopped image", "an AI-generated image", "a computer-generated image",
    "a collage of photos", "a grid of images", "a comparison of two images", "a before and after image",
    "a photo of a painting", "a photo of a drawing", "a framed picture on a wall", "a gallery wall",
    "a blank image", "a white image", "a black image", "a noise image", "a photo with a border",
    "a square image", "a round image", "a vertical image", "a horizontal image", "a mirrored image",
    "an upside down image", "a rotated image", "a symmetrical image", "an image with many small details",
    "an image with one large object", "an image with a plain background", "an image with a busy background",
    "an image with a white background", "an image with a black background", "an image with a blurred background",
    "an image with a gradient background", "an image with a sky background", "a product photo",
    "an advertisement", "a news photo", "a historical photo", "a family photo", "a travel photo",
    "a vacation photo", "a nature documentary still", "a scientific image", "a medical image",
    "a map of a city", "a world map", "a floor plan", "a graph", "a bar chart", "a pie chart",
    "a line graph", "a flowchart", "a user interface", "a website", "a desktop screenshot",
    "a smartphone screen", "an error message on a screen", "a video game", "a board game", "playing cards",
]


# --------------------------------------------------------------------------- categories
def _sample(rng: random.Random, items: list[str], k: int) -> list[str]:
    """A seeded sample of ``COMBO_SCALE * k`` of ``items`` (all of them if there are fewer)."""
    items = sorted(set(items))
    k = max(1, round(k * COMBO_SCALE))
    return items if len(items) <= k else rng.sample(items, k)


def colour_lines(rng: random.Random) -> list[str]:
    out = list(COLOUR_PHRASES)
    out += [f"the color {c}" for c in COLOURS]
    out += [art(f"{c} car") for c in BASIC_COLOURS]
    out += [art(f"{c} object") for c in COLOURS]
    out += [f"an image dominated by {c}" for c in BASIC_COLOURS]
    out += [f"shades of {c}" for c in BASIC_COLOURS]
    out += [art(f"{c} background") for c in COLOURS]
    combos = [art(f"{c} {o}") for c, o in product(COLOURS, COLOURABLE)]
    out += _sample(rng, combos, 330)
    pairs = [f"{a} and {b}" for a, b in product(BASIC_COLOURS, BASIC_COLOURS) if a < b]
    out += _sample(rng, pairs, 60)
    pair_things = [f"{p} {t}" for p, t in product(pairs, ["stripes", "colors", "pattern", "flag", "checks"])]
    out += _sample(rng, pair_things, 60)
    out += _sample(rng, [art(f"{p} {o}") for p, o in product(pairs, ["shirt", "car", "sign", "bird", "ball",
                                                                       "umbrella", "dress", "train", "building"])], 40)
    return out


def shape_lines(rng: random.Random) -> list[str]:
    out = list(SHAPE_PHRASES)
    out += [art(s) for s in SHAPES]
    out += [f"many small {plural(s)}" for s in SHAPES[:20]]
    out += [f"{s}-shaped object" for s in ["heart", "star", "diamond", "cross", "arrow", "ring", "cone",
                                            "crescent", "spiral", "triangle", "square", "circle"]]
    combos = [art(f"{c} {s}") for c, s in product(BASIC_COLOURS, SHAPES)]
    out += _sample(rng, combos, 120)
    out += _sample(rng, [f"{art(s)} {loc}" for s, loc in product(SHAPES[:12], LOCATIONS[:12])], 50)
    out += _sample(rng, [f"{n} {plural(s)}" for n, s in product(NUMBER_WORDS[1:6], SHAPES[:12])], 40)
    return out


def texture_lines(rng: random.Random) -> list[str]:
    out = list(TEXTURE_PHRASES)
    out += [f"{t} texture" for t in TEXTURES]
    combos = [art(f"{t} {s}") for t, s in product(TEXTURES, TEXTURE_SURFACES)]
    out += _sample(rng, combos, 110)
    return out


def material_lines(rng: random.Random) -> list[str]:
    out = [f"made of {m}" for m in MATERIAL_NOUNS]
    out += [art(f"{m} surface") for m in SURFACE_MATERIALS]
    out += [f"a close-up of {m}" for m in ["wood", "marble", "granite", "concrete", "brick", "leather",
                                            "denim", "wool", "velvet", "lace", "cork", "rusted metal"]]
    combos = [art(f"{m} {o}") for m, objs in MATERIAL_OBJECTS.items() for o in objs]
    out += _sample(rng, combos, 170)
    return out


def pattern_lines(rng: random.Random) -> list[str]:
    out = list(PATTERN_PHRASES)
    out += [f"{art(p)} pattern" for p in PATTERNS]
    combos = [art(f"{p} {t}") for p, t in product(PATTERNS, PATTERN_THINGS)
              if not (p in ("star", "heart", "diamond") and t == "background")]
    out += _sample(rng, combos, 160)
    return out


def location_lines(rng: random.Random) -> list[str]:
    out = list(LOCATION_PHRASES)
    out += [f"something {loc}" for loc in LOCATIONS]
    out += [f"an object {loc}" for loc in LOCATIONS]
    combos = [f"{t} {loc}" for t, loc in product(LOCATED_THINGS, LOCATIONS)]
    out += _sample(rng, combos, 230)
    return out


def count_lines(rng: random.Random) -> list[str]:
    out = list(COUNT_PHRASES)
    combos = [f"{w} {plural(n)}" for w, n in product(COUNT_WORDS, COUNTABLE)
              if w not in ("a pile of", "a row of") or n in PILEABLE]
    out += _sample(rng, combos, 230)
    out += [f"a single {n}" for n in _sample(rng, COUNTABLE, 20)]
    out += [f"one {n}" for n in _sample(rng, COUNTABLE, 15)]
    return out


def object_lines(rng: random.Random) -> list[str]:
    out = [art(o) for o in OBJECTS]
    combos = [t.format(a=art(o), n=o) for t, o in product(OBJECT_TEMPLATES, OBJECTS)]
    combos += [t.format(a=art(o), n=o) for t, o in product(PLACED_TEMPLATES, OBJECTS) if o not in LARGE_OBJECTS]
    out += _sample(rng, combos, 200)
    return out


def animal_lines(rng: random.Random) -> list[str]:
    out = list(ANIMAL_PHRASES)
    out += [art(a) for a in ANIMALS]
    out += _sample(rng, [f"a photo of {art(a)}" for a in ANIMALS], 25)
    out += _sample(rng, [f"{art(a)} {act}" for a, act in product(MAMMALS, ANIMAL_ACTIONS)], 110)
    out += _sample(rng, [f"a baby {a}" for a in MAMMALS if a not in ("puppy", "kitten", "lamb", "pony")], 15)
    out += [art(f"{c} {a}") for c, a in ANIMAL_COLOURED]
    out += _sample(rng, [f"{n} {plural(a)}" for n, a in product(["two", "three", "many", "a group of"], ANIMALS)], 50)
    out += _sample(rng, [f"{art(a)} in the wild" for a in MAMMALS], 12)
    return out


def people_lines(rng: random.Random) -> list[str]:
    out = list(PEOPLE_PHRASES)
    out += [art(p) for p in PEOPLE]
    out += [art(r) for r in ROLES]
    who = PEOPLE + ROLES
    out += _sample(rng, [f"{art(p)} {a}" for p, a in product(who, ACTIVITIES)
                         if p not in YOUNG or a in YOUNG_ACTIVITIES], 230)
    out += _sample(rng, [f"{art(p)} {c}" for p, c in product(PEOPLE, CLOTHING) if _can_wear(p, c)], 120)
    out += _sample(rng, [f"a portrait of {art(p)}" for p in who], 30)
    out += _sample(rng, [f"{art(r)} at work" for r in ROLES], 25)
    out += _sample(rng, [f"a group of {plural(r)}" for r in ROLES if " in " not in r], 20)
    return out


def place_lines(rng: random.Random) -> list[str]:
    out = list(SCENE_PHRASES)
    out += [art(p) for p in INDOOR + OUTDOOR_URBAN + NATURE]
    busy = [p for p in INDOOR + OUTDOOR_URBAN if p not in ("city skyline", "suburb", "neighborhood", "downtown",
                                                           "industrial area", "busy intersection", "elevator")]
    out += _sample(rng, [f"an empty {p}" for p in busy], 25)
    out += _sample(rng, [f"a crowded {p}" for p in busy], 25)
    out += _sample(rng, [f"the inside of {art(p)}" for p in INDOOR], 15)
    outdoor = [p for p in OUTDOOR_URBAN + NATURE if p not in ("coral reef", "cave")]
    out += _sample(rng, [art(f"{w} {p}") for w, p in product(WEATHER, outdoor)], 110)
    out += _sample(rng, [f"{art(p)} {t}" for p, t in product(outdoor, TIMES)], 120)
    out += _sample(rng, [f"{art(p)} {s}" for p, s in product(outdoor, SEASONS)], 140)
    out += _sample(rng, [f"{art(p)} on {art(w)} day" for p, w in product(outdoor, WEATHER)], 40)
    out += list(WEATHER_PHRASES) + list(TIME_PHRASES) + list(SEASON_PHRASES)
    out += [f"{w} weather" for w in WEATHER]
    out += [f"photo taken {t}" for t in TIMES]
    return out


def art_lines(rng: random.Random) -> list[str]:
    out = list(ART_STYLES)
    combos = [f"{art(s)} of {subj}" for s, subj in product(ART_STYLES, ART_SUBJECTS) if s not in NO_SUBJECT_STYLES]
    out += _sample(rng, combos, 330)
    out += [f"{s} style" for s in ["cartoon", "anime", "pixel art", "watercolor", "oil painting", "comic book",
                                   "impressionist", "cubist", "pop art", "art deco", "minimalist", "retro",
                                   "vintage", "low poly", "flat design", "isometric", "sketch", "noir"]]
    return out


def lighting_lines(rng: random.Random) -> list[str]:
    out = list(LIGHTING)
    out += _sample(rng, [f"{s} lit by {src}" for s, src in product(LIT_SUBJECTS, LIGHT_SOURCES)], 90)
    out += _sample(rng, [f"{art(t)} photo with {lt}" for t, lt in product(
        ["portrait", "landscape", "street", "food", "product"],
        ["warm light", "cold light", "soft light", "hard light", "natural light", "dramatic lighting"])], 20)
    out += _sample(rng, [f"{s} in the shadows" for s in LIT_SUBJECTS], 8)
    out += _sample(rng, [f"a backlit {s[2:]}" for s in LIT_SUBJECTS], 8)
    return out


def camera_lines(rng: random.Random) -> list[str]:
    out = list(CAMERA)
    out += [f"a close-up of {s}" for s in CLOSE_SUBJECTS[:6]]
    out += _sample(rng, [t.format(a=s) for t, s in product(CAMERA_TEMPLATES, CAMERA_SUBJECTS)], 80)
    out += _sample(rng, [t.format(a=s) for t, s in product(CLOSE_TEMPLATES, CLOSE_SUBJECTS)], 50)
    out += _sample(rng, [t.format(a=s) for t, s in product(WIDE_TEMPLATES, WIDE_SUBJECTS)], 50)
    return out


def mood_lines(rng: random.Random) -> list[str]:
    out = list(EMOTION_PHRASES)
    out += _sample(rng, [art(t.format(m=m)[2:]) for t, m in product(MOOD_TEMPLATES, MOODS)], 240)
    out += _sample(rng, [art(f"{e} {w}") for e, w in product(EMOTIONS, EMOTION_WHO)], 200)
    out += _sample(rng, [f"an image that feels {m}" for m in MOODS], 15)
    out += _sample(rng, [f"a person looking {e}" for e in EMOTIONS
                         if e not in ("laughing", "crying", "smiling", "frowning", "screaming")], 15)
    return out


def text_lines(rng: random.Random) -> list[str]:
    out = list(TEXT_PHRASES)
    out += [f"the letter {x}" for x in LETTERS]
    out += _sample(rng, [f"a lowercase letter {x.lower()}" for x in LETTERS], 10)
    out += _sample(rng, [f"a capital letter {x}" for x in LETTERS], 10)
    out += _sample(rng, [f"a large letter {x} in {c}" for x, c in product(LETTERS, TEXT_COLOURS)], 14)
    out += [f"the number {n}" for n in range(10)]
    out += [f"the number {n}" for n in (10, 12, 13, 21, 42, 50, 99, 100, 365, 1000, 2024)]
    out += [f"the digit {w}" for w in ["zero"] + NUMBER_WORDS[:9]]
    out += [f"text in {lang}" for lang in LANGUAGES]
    out += [f"a sign in {lang}" for lang in LANGUAGES[:8]]
    out += [f"{c} text" for c in TEXT_COLOURS]
    out += [f"{a} text on {art(b)} background" for a, b in product(TEXT_COLOURS, TEXT_COLOURS) if a != b][:12]
    out += _sample(rng, [f"text on {art(t)}" for t in ["sign", "wall", "screen", "shirt", "bag", "truck",
                                                         "window", "box", "building", "poster", "bottle",
                                                         "car", "banner", "cake", "door", "whiteboard"]], 12)
    return out


def symbol_lines(rng: random.Random) -> list[str]:
    out = list(SYMBOL_PHRASES)
    out += [art(s) for s in SYMBOLS]
    out += [f"the {f} flag" if f[0].isupper() else art(f"{f} flag") for f in FLAGS]
    out += _sample(rng, [art(f"{c} {s}") for c, s in product(BASIC_COLOURS, [
        "heart symbol", "arrow", "check mark", "question mark", "star symbol", "logo", "icon", "sign",
        "cross", "circle logo", "emblem", "badge", "flag"])], 50)
    out += _sample(rng, [f"{art(s)} icon" for s in ["phone", "mail", "camera", "music", "search", "settings",
                                                     "calendar", "clock", "user", "cloud", "map", "star",
                                                     "heart", "shopping cart", "lock", "bell"]], 12)
    return out


def food_lines(rng: random.Random) -> list[str]:
    out = list(FOOD_PHRASES)
    out += list(FOODS)
    combos = [t.format(f=f) for t, f in product(FOOD_TEMPLATES[1:], FOODS)
              if not (t.startswith(("fresh", "homemade")) and f.startswith(("a ", "an ")))]
    out += _sample(rng, combos, 170)
    return out


def vehicle_lines(rng: random.Random) -> list[str]:
    out = list(VEHICLE_PHRASES)
    out += [art(v) for v in VEHICLES]
    out += _sample(rng, [t.format(a=art(v), n=v) for t, v in product(VEHICLE_TEMPLATES[1:], VEHICLES)], 100)
    out += _sample(rng, [t.format(a=art(v), n=v) for t, v in product(LAND_TEMPLATES, LAND_VEHICLES)], 60)
    out += _sample(rng, [art(f"{c} {v}") for c, v in product(BASIC_COLOURS, VEHICLES)], 60)
    return out


def building_lines(rng: random.Random) -> list[str]:
    out = list(BUILDING_PHRASES)
    out += [art(b) for b in BUILDINGS]
    out += _sample(rng, [t.format(a=art(b), n=b) for t, b in product(BUILDING_TEMPLATES[1:], BUILDINGS)
                         if _building_ok(t, b)], 190)
    return out


def _building_ok(template: str, building: str) -> bool:
    if building.startswith(("ancient", "skyscraper under")) and template.startswith(("an old", "a modern", "a ruined")):
        return False
    if template.startswith("the inside of") and building in ("bridge", "statue", "fountain", "monument", "dam",
                                                             "tower", "pyramid", "water tower"):
        return False
    return not (template.startswith("the facade of") and building in ("tent", "statue", "fountain", "bridge", "dam"))


def concept_lines(rng: random.Random) -> list[str]:
    out = list(CONCEPTS)
    out += _sample(rng, [t.format(c=c) for t, c in product(CONCEPT_TEMPLATES[1:], CONCEPTS)], 170)
    return out


def image_lines(rng: random.Random) -> list[str]:
    return list(IMAGE_PHRASES)


CATEGORIES = [
    colour_lines, shape_lines, texture_lines, material_lines, pattern_lines, location_lines, count_lines,
    object_lines, animal_lines, people_lines, place_lines, art_lines, lighting_lines, camera_lines,
    mood_lines, text_lines, symbol_lines, food_lines, vehicle_lines, building_lines, concept_lines,
    image_lines,
]


def general_pool(seed: int = SEED) -> list[str]:
    """The general pool: unique (case-insensitively), capitalised, sorted case-insensitively."""
    seen: dict[str, str] = {}
    for i, make in enumerate(CATEGORIES):
        rng = random.Random(seed * 1000 + i)  # one stream per category: editing one leaves the others
        for line in make(rng):
            line = " ".join(line.split())
            if line:
                seen.setdefault(line.lower(), cap(line))
    return sorted(seen.values(), key=lambda s: (s.lower(), s))


# --------------------------------------------------------------------------- the toy pool
def toy_pool() -> list[tuple[str, str, str]]:
    """``(text, factor, value)`` rows: four phrasings of every factor value, in the toy grammar."""
    sys.path.insert(0, str(ROOT / "src"))
    from cliplens.toyworld.captions import POSITION_PHRASES, bg_phrase, count_phrase, object_phrase
    from cliplens.toyworld.scenes import BG_COLOURS, BG_KINDS, COLOURS, MAX_OBJECTS, POSITIONS, SHAPES, SIZES

    rows: list[tuple[str, str, str]] = []

    def add(factor: str, value: str, texts: list[str]) -> None:
        rows.extend((t, factor, value) for t in texts)

    for s in SHAPES:
        add("shape", s, ["a photo of " + object_phrase(shape=s), object_phrase(shape=s),
                         "a drawing of " + object_phrase(shape=s), "a picture of " + object_phrase(shape=s)])
    for c in COLOURS:
        add("colour", c, ["a photo of " + object_phrase(c), object_phrase(c, noun="object"),
                          "a picture of " + object_phrase(c), "an image of " + object_phrase(c, noun="object")])
    for z in SIZES:
        add("size", z, ["a photo of " + object_phrase(size=z), object_phrase(size=z),
                        object_phrase(size=z, noun="object"), "an image of " + object_phrase(size=z, noun="object")])
    for p in POSITIONS:
        assert p in POSITION_PHRASES
        add("position", p, ["a photo of " + object_phrase(position=p), object_phrase(position=p),
                            object_phrase(position=p, noun="object"),
                            "a picture of " + object_phrase(position=p, noun="object")])
    for k in BG_KINDS:
        add("bg_kind", k, ["a photo of " + bg_phrase(k, None), bg_phrase(k, None),
                           "shapes on " + bg_phrase(k, None), "a picture of " + bg_phrase(k, None)])
    for b in BG_COLOURS:
        add("bg_colour", b, ["a photo of " + bg_phrase(None, b), bg_phrase(None, b),
                             "an object on " + bg_phrase(None, b), "a picture of " + bg_phrase(None, b)])
    for n in range(1, MAX_OBJECTS + 1):
        there = "there is" if n == 1 else "there are"
        add("count", str(n), ["a photo of " + count_phrase(n, None, None), count_phrase(n, None, None),
                              count_phrase(n, None, None, "object"), f"{there} {count_phrase(n, None, None)}"])
    return rows


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    pool = general_pool()
    (DATA / "textspan_general.txt").write_text("\n".join(pool) + "\n", encoding="utf-8")
    rows = toy_pool()
    (DATA / "textspan_toy.txt").write_text("\n".join(t for t, _, _ in rows) + "\n", encoding="utf-8")
    tsv = "text\tfactor\tvalue\n" + "".join(f"{t}\t{f}\t{v}\n" for t, f, v in rows)
    (DATA / "textspan_toy_factors.tsv").write_text(tsv, encoding="utf-8")
    print(f"general: {len(pool)} texts; toy: {len(rows)} texts -> {DATA}")


if __name__ == "__main__":
    main()
