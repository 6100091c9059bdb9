"""Returns a wrong value chosen by args[0]: none, str, bool, 99, -1, float, success_str."""
RESULTS = {
    "none": None,
    "str": "0",
    "bool": True,
    "false": False,
    "99": 99,
    "-1": -1,
    "32": 32,
    "float": 0.0,
    "huge": 1 << 70,
}


def authenticate(pamh, flags, args):
    return RESULTS[args[0]]
