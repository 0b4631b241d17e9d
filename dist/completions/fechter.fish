# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_fechter_global_optspecs
    string join \n h/help V/version
end

function __fish_fechter_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_fechter_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_fechter_using_subcommand
    set -l cmd (__fish_fechter_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c fechter -n "__fish_fechter_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fechter -n "__fish_fechter_needs_command" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "agent" -d 'Run the agent on this machine (one per machine, as root)'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "add-address" -d 'Add an address to the cluster, e.g. `eth0:198.51.100.10/24`'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "remove-address" -d 'Stop assigning an address; its holder releases it (it is kept as do-not-assign)'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "up" -d 'Mark this machine up: it may receive addresses (a node starts down)'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "down" -d 'Mark this machine down: its addresses are handed to the others first'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "forget" -d 'Forget a machine that is gone for good: its record and its vote'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "status" -d 'Show where every address is, and the cluster\'s members'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "members" -d 'Show the cluster\'s members: liveness, admin status, eligibility'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "events" -d 'Show this node\'s history: addresses acquired and released (and why), takeovers, members, leader, health checks, quorum'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "demo" -d 'Run a live three-node demo cluster in network namespaces on this machine (needs root): add addresses, kill the holder of one, show the failover a client saw; everything is removed at the end (also on Ctrl-C)'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "reload" -d 'Make the agent re-read its configuration (as SIGHUP does): live changes apply without moving any address, restart-only ones are refused'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "check-config" -d 'Check an agent config file: every error with its line and key'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "keygen" -d 'Write a fresh random cluster key to PATH (mode 0600; never overwrites)'
complete -c fechter -n "__fish_fechter_needs_command" -f -a "plan" -d 'Offline: print the allocation and standbys for given nodes and addresses'
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l config -d 'A TOML file with any of these settings (flags override it). Default: /etc/fechter/fechter.toml when it exists' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l node-id -d 'This node\'s id (default: the host name)' -r
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l listen -d 'This node\'s cluster address, IP[:PORT] (default port 4573): the address the other nodes reach it at (not 0.0.0.0). Required here or in the file' -r
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l attach -d 'A member of an existing cluster to join, ADDR[:PORT] (repeatable)' -r
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l data-dir -d 'Where the agent keeps its state (default /var/lib/fechter)' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l key-file -d 'The 32-byte cluster key (create one with `fechter keygen`)' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l gateway -d 'The gateway to check with ICMP echo: while it does not answer, this node takes no addresses (and in a two-node cluster it breaks ties)' -r
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l control-socket -d 'The control socket the CLI talks to (default /run/fechter/fechter.sock)' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l log-format -d 'Log format: `text` (journald-friendly, the default) or `json` (one object per line, for log shippers)' -r -f -a "text\t''
json\t''"
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l metrics-listen -d 'Serve Prometheus metrics at http://IP:PORT/metrics (default: off)' -r
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l insecure -d 'Run without a cluster key: cluster traffic is neither authenticated nor encrypted'
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l dry-run -d 'Decide and log, but never touch the interfaces (no netlink, no packets)'
complete -c fechter -n "__fish_fechter_using_subcommand agent" -l realtime -d 'Run at real-time priority (SCHED_RR 10; check scripts and hooks still run at normal priority) with memory locked, so that a busy machine never delays a heartbeat: for short timings such as dist/profiles/fast.toml. Needs CAP_SYS_NICE and CAP_IPC_LOCK'
complete -c fechter -n "__fish_fechter_using_subcommand agent" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand agent" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand add-address" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand add-address" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand add-address" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand remove-address" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand remove-address" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand remove-address" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand up" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand up" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand up" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand down" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand down" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand down" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand forget" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand forget" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fechter -n "__fish_fechter_using_subcommand forget" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand status" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand status" -l json -d 'Print JSON instead of the table'
complete -c fechter -n "__fish_fechter_using_subcommand status" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand status" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand members" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand members" -l json -d 'Print JSON instead of the table'
complete -c fechter -n "__fish_fechter_using_subcommand members" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand members" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand events" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand events" -l follow -d 'Keep printing new events as they happen (until Ctrl-C)'
complete -c fechter -n "__fish_fechter_using_subcommand events" -l json -d 'Print one JSON object per line instead of text'
complete -c fechter -n "__fish_fechter_using_subcommand events" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fechter -n "__fish_fechter_using_subcommand events" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand demo" -l nodes -d 'How many machines the demo cluster has' -r
complete -c fechter -n "__fish_fechter_using_subcommand demo" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand demo" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand reload" -l control-socket -d 'The agent\'s control socket' -r -F
complete -c fechter -n "__fish_fechter_using_subcommand reload" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand reload" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c fechter -n "__fish_fechter_using_subcommand check-config" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand keygen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fechter -n "__fish_fechter_using_subcommand keygen" -s V -l version -d 'Print version'
complete -c fechter -n "__fish_fechter_using_subcommand plan" -l node -d 'An eligible node (repeatable, or comma-separated)' -r
complete -c fechter -n "__fish_fechter_using_subcommand plan" -l fail -d 'A node to fail after the first allocation (repeatable, or comma-separated)' -r
complete -c fechter -n "__fish_fechter_using_subcommand plan" -l json -d 'Print JSON instead of tables'
complete -c fechter -n "__fish_fechter_using_subcommand plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c fechter -n "__fish_fechter_using_subcommand plan" -s V -l version -d 'Print version'
