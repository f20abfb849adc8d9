"""Sentence templates, shared by the renderer and the parser.

Placeholders: ``{X}``/``{x}`` the defined quantity (sentence-initial / inline), ``{p}``,
``{p1}``, ``{p2}`` parent quantities, ``{ps}`` a list of quantities, ``{c}`` a constant.
Names are Capitalised and template words lower case, which keeps every template
unambiguous for the parser; a new template only has to keep that rule.
"""

STATEMENTS = {
    "const": (
        "{X} equals {c}.",
        "The number of {x} is {c}.",
        "{X} is {c}.",
    ),
    "copy": (
        "{X} equals {p}.",
        "The number of {x} is the same as {p}.",
        "{X} is as many as {p}.",
    ),
    "add": (
        "{X} is {c} more than {p}.",
        "{X} equals {p} plus {c}.",
        "The number of {x} exceeds {p} by {c}.",
    ),
    "mul": (
        "{X} is {c} times {p}.",
        "{X} equals {c} times as many as {p}.",
        "The number of {x} is {p} multiplied by {c}.",
    ),
    "diff": (
        "{X} equals {p1} minus {p2}.",
        "{X} is the difference of {p1} and {p2}.",
        "The number of {x} is {p2} fewer than {p1}.",
    ),
    "sum": (
        "{X} equals the sum of {ps}.",
        "{X} is {ps} combined.",
        "The number of {x} is the total of {ps}.",
    ),
}

QUESTIONS = (
    "Question: what is {x}?",
    "Question: how many is {x}?",
    "Question: find {x}.",
)

# One solved step, written with a variable letter ``{v}`` for the quantity; the equation chain
# ``{rhs}`` names the inputs by their letters and ends with the value.
SOLVE = (
    "Define {x} as {v}; so {v} = {rhs}.",
    "Let {v} be {x}; then {v} = {rhs}.",
    "Write {v} for {x}, so {v} = {rhs}.",
)
# The same step without letters: the chain names every input by its quantity phrase, as the
# question does, so the model copies names instead of binding letters.
SOLVE_NAMED = (
    "{X} = {rhs}.",
    "So {x} = {rhs}.",
    "Next, {x} = {rhs}.",
)

# Exploration: a locked node is attempted and left.
ATTEMPT = (
    "Try {x}: it needs {missing}, which {be} not known yet, so come back later.",
    "Can we get {x} now? Not yet, {missing} {be} still unknown.",
    "Look at {x}: {missing} {be} missing, so skip it for now.",
)
# Exploration: an attempted node turns out to be solvable.
EARLY = (
    "Try {x}: everything it needs is known, so solve it now.",
    "Look ahead at {x}: its inputs are ready, so do it early.",
)
# Exploration: coming back to a node attempted while locked.
REVISIT = (
    "Back to {x}, which was blocked before: its inputs are known now.",
    "Return to {x} from earlier; everything it needs is known now.",
    "Earlier {x} was stuck, but now it can be solved.",
)
# Exploitation: restate the information that defines the node before solving it.
RESTATE = (
    "Recall that {x} is {desc}, and {facts}.",
    "{X} is {desc}; we know {facts}.",
    "To get {x}, gather the facts: it is {desc}, and {facts}.",
)
DESC = {
    "const": "given as {c}",
    "copy": "the same as {p}",
    "add": "{c} more than {p}",
    "mul": "{c} times {p}",
    "diff": "{p1} minus {p2}",
    "sum": "the sum of {ps}",
}
RESTATE_CONST = (
    "Recall that {x} is given as {c}.",
    "The problem says {x} is {c}.",
)
