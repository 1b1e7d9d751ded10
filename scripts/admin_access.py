"""coffer-admin commands for the record of what administrators do:

  disclose NAME --to WHOM --reason WHY     record a disclosure before it is made
  access NAME                              what administrators did on an account

The account holder reads the same record over SSH (`coffer access`). The
work is providers/access.py.
"""
from __future__ import annotations

from providers import access
from providers.lifecycle import iso

from .admin_common import out


def cmd_disclose(st, args):
    d = access.disclose(st, args.name, args.to, args.reason)
    data = {**{k: v for k, v in d.items() if k != "at_us"}, "at": iso(d["at_us"])}
    out(args, data, f"disclosure #{d['id']} of {d['name']} to {d['to']} recorded ({data['at']}); the account "
                    f"holder can read it with `coffer access`. Export for it with `coffer-admin user export "
                    f"{d['name']} --disclosure {d['id']} --out FILE`")


def cmd_access(st, args):
    user = st.accounts.get(args.name)
    rows = [{"id": r["id"], "at": iso(r["at_us"]), "event": r["event"], "what": r["what"], "detail": r["detail"]}
            for r in access.accesses(st, user.id)]
    out(args, rows, "\n".join(f"{r['at']}  #{r['id']}  {r['what']}" for r in rows)
        or f"no administrator action is recorded on {user.name}")


def register(sub, user_sub, add):
    sp = add(sub, "disclose", cmd_disclose, "record that an account's data is disclosed to a third party (a court, "
             "the police), before anything is handed over; the account holder can read it", True)
    sp.add_argument("name")
    sp.add_argument("--to", required=True, metavar="WHOM", help="who receives the data")
    sp.add_argument("--reason", required=True, metavar="WHY", help="why: the request, order or case it answers")
    sp = add(sub, "access", cmd_access, "what administrators did on an account: exports, restores, purges, "
             "password resets, disclosures… (what its holder sees with `coffer access` over SSH)", True)
    sp.add_argument("name")
