"""Specialization tokens: the device's side of specialization (thesis 4.2.2, the kernel
extensions), which needs no specializer.

* pystack.tokens.api: the token API of fig. 4.7 (``do_specialize_send`` and the rest);
* pystack.tokens.system: tokens, the code cache and the guards;
* pystack.tokens.watch: guards on the data (the fields a token assumes);
* pystack.tokens.scenario: the declarations (scenarios, static fields, guard policies);
* pystack.tokens.facts: assumptions, the facts residual code relies on.

The code a token runs comes from the specializer in the same process (``specializer``,
imported when a token first needs code), or from a server (``remote``).
"""
