# What mypy and mypyc see of _mypyc.py: mypyc recognises its class options by
# this name. Type checking only: nothing imports mypy_extensions at run time.
from mypy_extensions import mypyc_attr as mypyc_attr
