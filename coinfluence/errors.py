"""The one exception type for mistakes a user can make (bad path, bad option, wrong checkpoint).

The CLI turns it into a single line on stderr and a non-zero exit; library code raises it
*before* doing any work, so that nothing already saved is touched.
"""


class UserError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""
