# fish completion for wg-pod(8). Installed as
# $(PREFIX)/share/fish/vendor_completions.d/wg-pod.fish. The subcommands and
# options are those of wg_pod_hook.cli.parser(): tests/unit/test_completions.py
# fails when one is missing here, or in wg-pod.bash and _wg-pod (zsh).

function __wg_pod_containers --description 'names podman knows'
    podman ps --format '{{.Names}}' 2>/dev/null
end

function __wg_pod_operands --description 'operands of the subcommand before the cursor'
    set -l valued port-remapping add-route interface dns kill-switch private-key url \
        annotation output hook settings hooks-dir systemd-dir
    set -l words (commandline -opc)
    set -e words[1]
    set -l count -1 # the subcommand itself is the first
    set -l skip 0
    for word in $words
        if test $skip -eq 1
            set skip 0
            continue
        end
        switch $word
            case '--*=*' '-'
            case '--*'
                if contains -- (string sub -s 3 -- $word) $valued
                    set skip 1
                end
            case '-*'
            case '*'
                set count (math $count + 1)
        end
    end
    echo $count
end

function __wg_pod_operand --argument-names command position --description 'completing operand POSITION of COMMAND'
    __fish_seen_subcommand_from $command; or return 1
    test (__wg_pod_operands) -eq $position
end

set -l commands join leave status reload check install uninstall cdi gc daemon health doctor

complete -c wg-pod -f
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -l debug -d 'log details to stderr'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -l version -d 'print the version'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'show help'

complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a join -d 'put a running container on a WireGuard network'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a leave -d "remove a container's tunnel and its rules"
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a status -d 'tunnels wg-pod manages, like wg show'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a reload -d 'apply changed configs to running tunnels in place'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a check -d 'validate a config and print the plan'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a install -d 'write the hooks.d definitions for this installation'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a uninstall -d 'remove the hooks.d definitions'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a cdi -d 'a CDI device for each allowed config'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a gc -d 'remove leftovers of hooks that were killed mid-way'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a daemon -d 'keep every tunnel up (runs in the foreground)'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a health -d 'exit 0 when every (or the named) tunnel is up or idle'
complete -c wg-pod -n "not __fish_seen_subcommand_from $commands" -a doctor -d 'check this host for what wg-pod needs'

# Options of every subcommand.
complete -c wg-pod -n "__fish_seen_subcommand_from $commands" -l debug -d 'log details to stderr'
complete -c wg-pod -n "__fish_seen_subcommand_from $commands" -s h -l help -d 'show help'

# join CONTAINER CONFIG
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l port-remapping -x -d 'IFPORT[/PROTO]:CPORT[/PROTO], repeatable'
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l delete-default -d "remove podman's IPv4 and IPv6 default routes"
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l add-route -x -d 'TARGET:GATEWAY (IPv6 in brackets), repeatable'
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l interface -x -d 'interface name in the container'
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l dns -x -d 'auto, off, or servers and search domains'
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l kill-switch -x -a 'auto on off' -d 'the kill switch'
complete -c wg-pod -n '__fish_seen_subcommand_from join' -l private-key -r -F -d 'the private key from FILE'
complete -c wg-pod -n '__wg_pod_operand join 0' -a '(__wg_pod_containers)' -d container
complete -c wg-pod -n '__wg_pod_operand join 1' -F -d config

# The podman API of the commands that name containers.
complete -c wg-pod -n '__fish_seen_subcommand_from join leave status reload health' -l url -x -d 'podman API (default: $CONTAINER_HOST)'

# leave, status, health: [CONTAINER]; reload: [CONTAINER...]
complete -c wg-pod -n '__fish_seen_subcommand_from status health check doctor' -l json -d 'machine-readable output'
complete -c wg-pod -n '__wg_pod_operand leave 0' -a '(__wg_pod_containers)' -d container
complete -c wg-pod -n '__wg_pod_operand status 0' -a '(__wg_pod_containers)' -d container
complete -c wg-pod -n '__wg_pod_operand health 0' -a '(__wg_pod_containers)' -d container
complete -c wg-pod -n '__fish_seen_subcommand_from reload' -a '(__wg_pod_containers)' -d container

# check CONFIG
complete -c wg-pod -n '__fish_seen_subcommand_from check' -l annotation -x -a 'wg-pod.config= wg-pod.interface= wg-pod.port-remapping= wg-pod.delete-default= wg-pod.add-route= wg-pod.dns= wg-pod.kill-switch= wg-pod.private-key=' -d 'a wg-pod.* annotation, KEY=VALUE'
complete -c wg-pod -n '__wg_pod_operand check 0' -F -d config

# install, uninstall (doctor: where install --hooks-dir put the definitions)
complete -c wg-pod -n '__fish_seen_subcommand_from install uninstall doctor' -l hooks-dir -x -a '(__fish_complete_directories)' -d 'directory of the hooks.d definitions'
complete -c wg-pod -n '__fish_seen_subcommand_from install uninstall' -l daemon -d "also the daemon's wg-pod.service"
complete -c wg-pod -n '__fish_seen_subcommand_from install uninstall' -l user -d 'the daemon of a rootless podman user'
complete -c wg-pod -n '__fish_seen_subcommand_from install uninstall' -l systemd-dir -x -a '(__fish_complete_directories)' -d 'directory of the unit'
complete -c wg-pod -n '__fish_seen_subcommand_from install cdi' -l hook -r -F -d 'absolute path of wg-pod-hook'
complete -c wg-pod -n '__fish_seen_subcommand_from install cdi' -l settings -r -F -d 'settings file the hook should use'

# cdi generate|list
complete -c wg-pod -n '__wg_pod_operand cdi 0' -a 'generate list'
complete -c wg-pod -n '__fish_seen_subcommand_from cdi' -l output -r -F -d 'the CDI spec to write (- prints it)'
