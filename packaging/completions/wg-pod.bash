# bash completion for wg-pod(8)                            -*- shell-script -*-
#
# Installed as $(PREFIX)/share/bash-completion/completions/wg-pod (loaded on
# demand by bash-completion). The subcommands and options are those of
# wg_pod_hook.cli.parser(): tests/unit/test_completions.py fails when one
# is missing here, or in _wg-pod (zsh) and wg-pod.fish.

_wg_pod_containers()
{
    # Names podman knows (the caller's podman: root's under sudo).
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$(podman ps --format '{{.Names}}' 2>/dev/null)" -- "$cur"))
}

_wg_pod_files()
{
    if declare -F _filedir >/dev/null; then
        _filedir "$@"
    else
        local IFS=$'\n'
        compopt -o filenames 2>/dev/null
        if [[ ${1-} == -d ]]; then
            COMPREPLY=($(compgen -d -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
    fi
}

_wg_pod()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        # Keep KEY=VALUE and unix:///... whole.
        _init_completion -n =: || return
    else
        COMPREPLY=()
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD - 1]}
    fi

    local commands="join leave status reload check install uninstall cdi gc daemon health doctor"
    local top_opts="--debug --version --help"
    # Options that take a value (the next word, or after =).
    local valued=" --port-remapping --add-route --interface --dns --kill-switch --private-key
        --url --annotation --output --hook --settings --hooks-dir --systemd-dir "
    local annotations="wg-pod.config= wg-pod.interface= wg-pod.port-remapping=
        wg-pod.delete-default= wg-pod.add-route= wg-pod.dns= wg-pod.kill-switch=
        wg-pod.private-key="

    # The subcommand, and how many of its operands come before this word.
    local i command="" operands=0
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --*=*) ;;
            -*) [[ $valued == *" ${words[i]} "* ]] && i=$((i + 1)) ;;
            *) if [[ -z $command ]]; then command=${words[i]}; else operands=$((operands + 1)); fi ;;
        esac
    done

    case $prev in
        --kill-switch)
            COMPREPLY=($(compgen -W "auto on off" -- "$cur"))
            return ;;
        --private-key | --hook | --settings | --output)
            _wg_pod_files
            return ;;
        --hooks-dir | --systemd-dir)
            _wg_pod_files -d
            return ;;
        --annotation)
            COMPREPLY=($(compgen -W "$annotations" -- "$cur"))
            compopt -o nospace 2>/dev/null
            return ;;
        --port-remapping | --add-route | --interface | --dns | --url)
            return ;;
    esac

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$top_opts" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts
    case $command in
        join) opts="--port-remapping --delete-default --add-route --interface --dns --kill-switch --private-key --url --debug --help" ;;
        leave | reload) opts="--url --debug --help" ;;
        status | health) opts="--json --url --debug --help" ;;
        check) opts="--annotation --json --debug --help" ;;
        install) opts="--hooks-dir --daemon --user --systemd-dir --hook --settings --debug --help" ;;
        uninstall) opts="--hooks-dir --daemon --user --systemd-dir --debug --help" ;;
        cdi) opts="--output --hook --settings --debug --help" ;;
        gc | daemon) opts="--debug --help" ;;
        doctor) opts="--json --hooks-dir --debug --help" ;;
        *) return ;;
    esac

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi

    case $command in
        join)
            case $operands in
                0) _wg_pod_containers ;;
                1) _wg_pod_files ;;
            esac ;;
        leave | status | health)
            ((operands == 0)) && _wg_pod_containers ;;
        reload)
            _wg_pod_containers ;;
        check)
            ((operands == 0)) && _wg_pod_files ;;
        cdi)
            ((operands == 0)) && COMPREPLY=($(compgen -W "generate list" -- "$cur")) ;;
    esac
} &&
    complete -F _wg_pod wg-pod

# ex: filetype=sh
