"""Vocabularies of the iGSM-style worlds.

A *theme* is a stack of layers; each layer is a category (singular, plural) and its
items. Item ``B`` of layer ``i+1`` can live inside item ``A`` of layer ``i``, which gives
the *instance* quantity "each A's B" (how many B are in each A) and the *abstract*
quantity "each A's total Bs" (all items of the next layer in each A, summed over the kinds
the problem mentions). Names are Capitalised words and template words are lower case, so
the parser can tell them apart; no name is also a category.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    singular: str
    plural: str
    items: tuple[str, ...]


Theme = tuple[Layer, ...]

# The embedded default: short one-word names, one small theme.
MINI_THEMES: dict[str, Theme] = {
    "farm": (
        Layer("Town", "Towns", ("Ash", "Elm", "Oak", "Fir", "Yew")),
        Layer("Farm", "Farms", ("Barn", "Coop", "Mill", "Shed", "Pen")),
        Layer("Animal", "Animals", ("Cow", "Hen", "Pig", "Goat", "Duck")),
        Layer("Part", "Parts", ("Horn", "Hoof", "Tail", "Ear", "Leg")),
    ),
}

# The paper's scale: two-word names, several themes, wider layers.
PAPER_THEMES: dict[str, Theme] = {
    "school": (
        Layer("District", "Districts", (
            "Riverside District", "Hillcrest District", "Lakeshore District", "Oakwood District",
            "Pinecrest District", "Westfield District", "Eastgate District", "Northbrook District")),
        Layer("School", "Schools", (
            "Music School", "Art School", "Dance School", "Science School",
            "Language School", "Drama School", "Cooking School", "Sports School")),
        Layer("Classroom", "Classrooms", (
            "Pottery Classroom", "Chemistry Classroom", "Robotics Classroom", "History Classroom",
            "Poetry Classroom", "Painting Classroom", "Algebra Classroom", "Biology Classroom")),
        Layer("Backpack", "Backpacks", (
            "Canvas Backpack", "Leather Backpack", "Nylon Backpack", "Hiking Backpack",
            "Rolling Backpack", "Sling Backpack", "Denim Backpack", "Mesh Backpack")),
        Layer("Supply", "Supplies", (
            "Glue Stick", "Paint Brush", "Pencil Case", "Sticky Note",
            "Rubber Eraser", "Steel Ruler", "Chalk Box", "Ink Cartridge")),
    ),
    "zoo": (
        Layer("Zoo", "Zoos", (
            "City Zoo", "Safari Zoo", "Harbor Zoo", "Valley Zoo",
            "Forest Zoo", "Desert Zoo", "Island Zoo", "Summit Zoo")),
        Layer("Enclosure", "Enclosures", (
            "Reptile Enclosure", "Bird Enclosure", "Primate Enclosure", "Feline Enclosure",
            "Aquatic Enclosure", "Insect Enclosure", "Grazer Enclosure", "Nocturnal Enclosure")),
        Layer("Animal", "Animals", (
            "Snow Leopard", "Red Panda", "Gray Wolf", "Brown Bear",
            "Black Swan", "Sea Otter", "Polar Bear", "Barn Owl")),
        Layer("Toy", "Toys", (
            "Rubber Ball", "Rope Toy", "Chew Bone", "Puzzle Feeder",
            "Scratch Post", "Hay Ball", "Ice Block", "Swing Tire")),
    ),
    "harbor": (
        Layer("Port", "Ports", (
            "Coral Port", "Amber Port", "Granite Port", "Willow Port",
            "Falcon Port", "Silver Port", "Maple Port", "Beacon Port")),
        Layer("Ship", "Ships", (
            "Cargo Ship", "Fishing Boat", "Ferry Boat", "Sailing Yacht",
            "Tug Boat", "Patrol Boat", "Research Vessel", "Ice Breaker")),
        Layer("Crate", "Crates", (
            "Wooden Crate", "Metal Crate", "Plastic Crate", "Cedar Chest",
            "Wire Basket", "Paper Carton", "Steel Drum", "Woven Hamper")),
        Layer("Good", "Goods", (
            "Olive Jar", "Spice Sack", "Tea Tin", "Salt Block",
            "Silk Roll", "Wool Bale", "Honey Pot", "Rice Bag")),
    ),
}


def all_themes() -> dict[str, Theme]:
    return {**MINI_THEMES, **PAPER_THEMES}


def _check_vocabulary() -> None:
    seen: dict[str, str] = {}
    for tname, theme in all_themes().items():
        for layer in theme:
            for word in (layer.singular, layer.plural, *layer.items):
                assert all(w.isalpha() and w[0].isupper() and w[1:].islower() for w in word.split()), word
            for item in layer.items:
                assert item not in seen or seen[item] == tname, f"{item} is in two themes"
                seen[item] = tname


_check_vocabulary()
