/*
 * founding.pml: a model of the founding rules of src/decide.rs and of the
 * round loop in src/rounds.rs and src/cmd/run.rs that feeds them, checked with spin
 * (model/check.sh runs every configuration).
 *
 * What is modelled (the names are decide's and the round loop's):
 *   - Peers listen on the cluster port, then register (rank = registration
 *     time, ties broken by peer index as decide breaks them by peer ID).
 *   - Eventual consistency: each observer's discover lists a registration
 *     some time after it is made, at most D ticks after, independently per
 *     observer (decided at each discover). D < SETTLE is the assumption; the checks also run with
 *     D >= SETTLE to show that the bound matters.
 *   - A round: discover (one step), then one probe per listed peer (one step
 *     each, so peers change between the discover and each probe), then
 *     decide (one step) and the greeting update.
 *   - decide, rule 2: live or founding peers -> raft fixed-set continuation
 *     (fixed_set_in_progress), else join a live member, else wait.
 *   - decide, rule 4: too few -> wait; view changed less than SETTLE ago ->
 *     wait; not in the first E -> wait; a member of the first E that does not
 *     propose the same set -> wait; crdt: found when first, else wait; raft:
 *     found with init_peerset = the first E.
 *   - rounds: a non-wait decision reached after a wait is acted on only if the
 *     next round also returns one (the confirming round).
 *   - Founders announce their founding (FOUNDING: raft its set, crdt
 *     itself) until every waiting peer that lists them has heard it (the
 *     linger: one poll interval of the others), then close the port for as
 *     long as their daemon takes to listen (STARTING, any number of ticks),
 *     then run. A peer that heard a founder takes it as founding while its
 *     port is closed (rounds' FOUNDER_START_GRACE, assumed longer than any
 *     daemon's start); it may forget a founder that crashed.
 *   - Crashes: up to CRASHES peers stop at any point and stay down, their
 *     registrations left behind (stale records of dead peers).
 *   - A join whose target is gone by the time the daemon starts fails, and
 *     the peer stops (a failed bootstrap exits the daemon).
 * Not modelled: rule 0 (a twin identity), rule 1 (existing state), rule 3
 * (daemons starting, unidentified daemons), restarts, mixed consensus.
 *
 * Properties, asserted at every founding:
 *   crdt: no other founder is alive (never two foundings at once);
 *   raft: every two founders alive founded with init_peersets whose
 *   majorities always meet (so two leaders can never be elected by
 *   disjoint quorums). Equal sets meet; so does a late member's
 *   continuation from the API's configuration (the set plus joiners).
 * A founder that crashed before anyone joined it leaves no cluster behind,
 * so founding again after it is the intended recovery, not a split.
 */

#ifndef N
#define N 3
#endif
#ifndef E
#define E 2
#endif
#ifndef D
#define D 1
#endif
#ifndef SETTLE
#define SETTLE 2
#endif
#ifndef RAFT
#define RAFT 0
#endif
#ifndef CRASHES
#define CRASHES 1
#endif
#if N == 2
#define CLUSTERS 4
#elif N == 3
#define CLUSTERS 8
#else
#define CLUSTERS 16
#endif

/* Mutations, to show the checks can fail: drop the agreement rule, the
   confirming round, or the memory of a founder's announcement. */
#ifndef NO_AGREEMENT
#define NO_AGREEMENT 0
#endif
#ifndef NO_CONFIRM
#define NO_CONFIRM 0
#endif

#ifndef NO_MEMORY
#define NO_MEMORY 0
#endif

#ifndef SKEW
#define SKEW 0
#endif

#define IDLE     0
#define WAITING  1
#define FOUNDING 2
#define RUNNING  3
#define DOWN     4
#define STARTING 5    /* a founder's daemon starting: the port is closed */

#define BIT(k)    (1 << (k))
#define HAS(m, k) ((((m) >> (k)) & 1) == 1)
#define KEY(k)    (rk[k])

byte phase[N];
byte rk[N];           /* rank: the registration order, or (SKEW) the peer index */
byte regs;            /* registrations made */
byte age[N];          /* ticks since peer k registered, up to D */
byte stable[N];       /* ticks since peer k's view last changed, up to SETTLE */
byte busy;            /* peers in the middle of a round */
bool vis[N * N];      /* vis[o*N+k]: observer o's discover lists peer k */
bool heard[N * N];    /* heard[o*N+k]: observer o heard peer k announce its founding */
byte prop[N];         /* the proposal in peer k's greeting; 0 = none */
byte fset[N];         /* raft: the init_peerset peer k founded with */
bool founded[N];
byte cl[N];           /* the cluster peer k runs in */
byte cm[CLUSTERS];    /* the members (raft: the configuration) of cluster c */
byte crashes;

/* out = the first E peers of mask in rank order, 0 when mask has fewer. */
inline first_e(mask, out) {
    out = 0;
    cnt = 0;
    do
    :: cnt < E ->
        best = 255;
        bk = 255;
        k = 0;
        do
        :: k < N ->
            if
            :: HAS(mask, k) && !HAS(out, k) && KEY(k) < best -> best = KEY(k); bk = k
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
        if
        :: bk == 255 -> out = 0; break
        :: else -> out = out | BIT(bk); cnt++
        fi
    :: else -> break
    od
}

/* n = the number of peers in mask. */
inline popcount(mask, n) {
    n = 0;
    k = 0;
    do
    :: k < N ->
        if
        :: HAS(mask, k) -> n++
        :: else -> skip
        fi;
        k++
    :: else -> break
    od
}

/* first = the earliest ranked peer of mask, 255 when empty. */
inline first_of(mask, first) {
    best = 255;
    first = 255;
    k = 0;
    do
    :: k < N ->
        if
        :: HAS(mask, k) && KEY(k) < best -> best = KEY(k); first = k
        :: else -> skip
        fi;
        k++
    :: else -> break
    od
}

proctype Peer(byte i) {
    byte seen, view, lastview, lastseen, set, key, members, founding, waiting, target;
    byte k, cnt, best, bk, j, act;
    byte lph[N], lprop[N], lev[N], lcp[N], lpub[N];
    byte na, nb, nab, ma, mb, need;
    bool waited, confirming, ok;

    /* contact point up, then RegisterInstance */
    atomic {
        regs++;
        if
        :: SKEW -> rk[i] = i
        :: else -> rk[i] = regs
        fi;
        phase[i] = WAITING;
        vis[i * N + i] = 1
    };
    lastview = 255;
end_peer:
    do
    :: phase[i] == WAITING ->
        /* discover: a registration not yet listed to this peer may show up
           now, and must once it is D ticks old; once listed it stays */
        atomic {
        busy++;
        k = 0;
        do
        :: k < N ->
            if
            :: k != i && phase[k] != IDLE && !vis[i * N + k] ->
                if
                :: vis[i * N + k] = 1
                :: age[k] < D -> skip
                fi
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
            seen = 0;
            k = 0;
            do
            :: k < N ->
                if
                :: k != i && vis[i * N + k] ->
                    seen = seen | BIT(k);
                    /* a founder's published init_peerset may not be listed yet */
                    if
                    :: RAFT && founded[k] -> lpub[k] = fset[k]
                    :: true -> lpub[k] = 0
                    fi
                :: else -> skip
                fi;
                k++
            :: else -> break
            od;
            k = 0
        };
        /* probe each listed peer, one at a time */
        j = 0;
        do
        :: j < N ->
            if
            :: HAS(seen, j) ->
                atomic {
                    lph[j] = phase[j];
                    if
                    :: phase[j] == FOUNDING && !NO_MEMORY -> heard[i * N + j] = 1
                    :: phase[j] == STARTING && heard[i * N + j] -> lph[j] = FOUNDING
                    :: phase[j] == STARTING && !heard[i * N + j] -> lph[j] = DOWN
                    /* the grace for a founder that died runs out */
                    :: phase[j] == DOWN && heard[i * N + j] -> heard[i * N + j] = 0
                    :: phase[j] == DOWN && heard[i * N + j] -> lph[j] = FOUNDING
                    :: else -> skip
                    fi;
                    lprop[j] = prop[j];
                    /* evidence: the announced set, else the published one,
                       else the API's cluster_peers (the configuration) */
                    if
                    :: phase[j] == RUNNING -> lcp[j] = cm[cl[j]]
                    :: else -> lcp[j] = 0
                    fi;
                    if
                    :: lph[j] == FOUNDING -> lev[j] = fset[j]
                    :: lph[j] != FOUNDING && lpub[j] != 0 -> lev[j] = lpub[j]
                    :: else -> lev[j] = lcp[j]
                    fi
                }
            :: else -> skip
            fi;
            j++
        :: else -> break
        od;
        /* decide (and the greeting's proposal) */
        atomic {
            members = 0;
            founding = 0;
            waiting = 0;
            j = 0;
            do
            :: j < N ->
                if
                :: HAS(seen, j) && lph[j] == RUNNING -> members = members | BIT(j)
                :: HAS(seen, j) && lph[j] == FOUNDING -> founding = founding | BIT(j)
                :: HAS(seen, j) && lph[j] == WAITING -> waiting = waiting | BIT(j)
                :: else -> skip
                fi;
                j++
            :: else -> break
            od;
            view = members | founding | waiting | BIT(i);
            if
            :: view != lastview || seen != lastseen -> lastview = view; lastseen = seen; stable[i] = 0
            :: else -> skip
            fi;
            first_e(view, set);
            prop[i] = set;
            act = 0;
            if
            :: (members | founding) != 0 ->
                /* rule 2 */
                if
                :: RAFT ->
                    /* the set as announced or published, in the code's order:
                       members first, then founding peers */
                    key = 0;
                    waiting = 0;  /* reused: members whose registration publishes a set */
                    j = 0;
                    do
                    :: j < N ->
                        if
                        :: HAS(members, j) && lpub[j] != 0 -> waiting = waiting | BIT(j)
                        :: else -> skip
                        fi;
                        j++
                    :: else -> break
                    od;
                    if
                    :: waiting != 0 -> first_of(waiting, target); key = lpub[target]
                    :: waiting == 0 && founding != 0 -> first_of(founding, target); key = lev[target]
                    :: waiting == 0 && founding == 0 -> first_of(members, target); key = lev[target]
                    fi;
                    waiting = 0;
                    ok = HAS(key, i);
                    j = 0;
                    do
                    :: j < N ->
                        if
                        :: HAS(members | founding, j) &&
                           (lev[j] != key || !HAS(key, j) ||
                            (lph[j] == RUNNING && (lcp[j] & ~key) != 0)) -> ok = false
                        :: else -> skip
                        fi;
                        j++
                    :: else -> break
                    od;
                    if
                    :: ok -> act = 2
                    :: else -> skip
                    fi
                :: else -> skip
                fi;
                if
                :: act == 0 && founding == 0 -> act = 1; first_of(members, target)
                :: else -> skip
                fi
            :: else ->
                /* rule 4 */
                if
                :: set == 0 -> skip                      /* too few */
                :: set != 0 && stable[i] < SETTLE -> skip  /* unsettled */
                :: set != 0 && stable[i] >= SETTLE && !HAS(set, i) -> skip  /* not in the founding set */
                :: set != 0 && stable[i] >= SETTLE && HAS(set, i) ->
                    ok = true;
                    j = 0;
                    do
                    :: j < N ->
                        if
                        :: !NO_AGREEMENT && j != i && HAS(set, j) && !(lph[j] == WAITING && lprop[j] == set) -> ok = false
                        :: else -> skip
                        fi;
                        j++
                    :: else -> break
                    od;
                    if
                    :: ok && RAFT -> act = 2; key = set
                    :: ok && !RAFT -> first_of(set, target);
                        if
                        :: target == i -> act = 2
                        :: else -> skip  /* awaiting the founder */
                        fi
                    :: else -> skip    /* no agreement */
                    fi
                fi
            fi;
            /* rounds: confirm a decision reached after waiting */
            if
            :: !NO_CONFIRM && act != 0 && waited && !confirming -> confirming = true; act = 0
            :: act != 0 -> skip
            :: else -> confirming = false; waited = true
            fi;
            /* forget the snapshot: it is not state */
            j = 0;
            do
            :: j < N -> lph[j] = 0; lprop[j] = 0; lev[j] = 0; lcp[j] = 0; lpub[j] = 0; j++
            :: else -> break
            od;
            seen = 0; members = 0; founding = 0; waiting = 0
        };
        /* act */
        if
        :: act == 2 && !RAFT ->
            atomic {
                j = 0;
                do
                :: j < N ->
                    assert(j == i || !founded[j] || phase[j] == DOWN);
                    j++
                :: else -> break
                od;
                founded[i] = true;
                cl[i] = BIT(i);
                cm[BIT(i)] = BIT(i);
                phase[i] = FOUNDING
            }
        :: act == 2 && RAFT ->
            atomic {
                j = 0;
                do
                :: j < N ->
                    if
                    :: j != i && founded[j] && phase[j] != DOWN ->
                        /* a split needs two majorities that do not meet */
                        popcount(fset[j], na);
                        popcount(key, nb);
                        popcount(fset[j] & key, nab);
                        ma = na / 2 + 1;
                        mb = nb / 2 + 1;
                        need = 0;
                        if
                        :: ma > na - nab -> need = need + ma - (na - nab)
                        :: else -> skip
                        fi;
                        if
                        :: mb > nb - nab -> need = need + mb - (nb - nab)
                        :: else -> skip
                        fi;
                        assert(need > nab)
                    :: else -> skip
                    fi;
                    j++
                :: else -> break
                od;
                founded[i] = true;
                fset[i] = key;
                cl[i] = key;
                cm[key] = cm[key] | key;
                phase[i] = FOUNDING
            }
        :: act == 1 ->
            atomic {
                if
                :: phase[target] == RUNNING ->
                    cl[i] = cl[target];
                    cm[cl[target]] = cm[cl[target]] | BIT(i);
                    phase[i] = RUNNING
                :: else -> phase[i] = DOWN  /* the bootstrap failed: the daemon exits */
                fi
            }
        :: else -> skip
        fi;
        atomic { act = 0; target = 0; key = 0; set = 0; busy-- }
    /* the linger: every waiting peer that lists this one has heard it */
    :: atomic {
        phase[i] == FOUNDING ->
        ok = true;
        k = 0;
        do
        :: k < N ->
            if
            :: phase[k] == WAITING && vis[k * N + i] && !heard[k * N + i] && !NO_MEMORY -> ok = false
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
        k = 0;
        if
        :: ok -> phase[i] = STARTING   /* the sidecar exits; the daemon starts */
        :: else -> skip
        fi
    }
    :: phase[i] == STARTING -> phase[i] = RUNNING   /* the daemon takes the port */
    :: phase[i] != DOWN && crashes < CRASHES -> atomic { crashes++; phase[i] = DOWN }
    od
}

/* Time, between rounds: a round (discover, probes, decide, act) takes less
   than a tick; any number of rounds fit in one. */
active proctype Clock() {
    byte k;
end_clock:
    do
    :: atomic {
        busy == 0 ->
        k = 0;
        do
        :: k < N ->
            if
            :: phase[k] != IDLE && age[k] < D -> age[k]++
            :: else -> skip
            fi;
            if
            :: phase[k] == WAITING && stable[k] < SETTLE -> stable[k]++
            :: else -> skip
            fi;
            k++
        :: else -> break
        od;
        k = 0
    }
    od
}

init {
    byte p;
    atomic {
        p = 0;
        do
        :: p < N -> run Peer(p); p++
        :: else -> break
        od
    }
}
