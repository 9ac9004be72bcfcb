"""Free datablock names. Blender 3.x resolves a rename onto a taken name by renaming the *other*
datablock (the artist's `cone` becomes `cone.001`), so new datablocks are only ever given names that
nobody holds yet."""


MAX_NAME = 63                   # Blender's ID name limit (bytes, without the 2-letter type code)


def free_name(collection, base, keep=None):
    """`base` if no datablock in `collection` (bpy.data.objects...) has it, else base.001, .002...
    `keep`: a datablock that may keep its own name (the one being renamed)."""
    base = _truncate(base or "Gen3D", MAX_NAME - 4)
    candidate, number = base, 0
    while True:
        holder = collection.get(candidate)
        if holder is None or (keep is not None and holder == keep):
            return candidate
        number += 1
        candidate = "%s.%03d" % (base, number)


def rename(block, collection, base):
    """Give `block` a free name made from `base`; returns the name it got."""
    name = free_name(collection, base, keep=block)
    if block.name != name:
        block.name = name
    return block.name


def _truncate(text, limit):
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")
