"""The click commands: each parses its options, calls one function of a lower room, renders.

One module per command (`index`, `search`, `score`, `explain`, `tune`, `eval`, `demo`, `serve`),
loaded lazily by cli.py so `discff --help` imports none of them; notices.py holds the warnings
several commands print. May import everything below it (search/, evaluation/, render/, engine/,
service/ only from `serve`), index/ and training/ (tune, the demo world); nothing imports commands/.
"""
