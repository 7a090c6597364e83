# bash completion for vrt and vrt-launch.
# VM names and their states come from `vrt list --json`; images, init
# scripts, ISOs and sizes from the root (--root DIR, $VRT_ROOT, /var/lib/vrt).

# The root the command line being completed uses.
_vrt_root() {
        local i
        for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
                case ${COMP_WORDS[i]} in
                --root) printf '%s\n' "${COMP_WORDS[i + 1]}"; return ;;
                --root=*) printf '%s\n' "${COMP_WORDS[i]#--root=}"; return ;;
                esac
        done
        printf '%s\n' "${VRT_ROOT:-/var/lib/vrt}"
}

# VM names whose state matches the extended regex $1 (empty: any).
_vrt_vms() {
        local want=$1 root
        root=$(_vrt_root)
        "${_vrt_cmd:-vrt}" --root "$root" list --json 2>/dev/null | awk -v want="^($want)\$" '
                /^    "name":/ { n = $0; sub(/^[^:]*:"/, "", n); sub(/".*/, "", n) }
                /^    "state":/ { s = $0; sub(/^[^:]*:"/, "", s); sub(/".*/, "", s)
                        if (want == "^()$" || s ~ want) print n }'
}

# Base names of ROOT/DIR/*SUFFIX.
_vrt_files() {
        local dir=$1 suffix=$2 f root
        root=$(_vrt_root)
        for f in "$root/$dir"/*"$suffix"; do
                [ -f "$f" ] || continue
                f=${f##*/}
                printf '%s\n' "${f%"$suffix"}"
        done
}

# Sizes: the built-in ones and every size.NAME.* in vrt.conf.
_vrt_sizes() {
        local root
        root=$(_vrt_root)
        {
                printf '%s\n' small medium large
                [ -r "$root/vrt.conf" ] && sed -n 's/^[[:space:]]*size\.\([A-Za-z0-9_-]*\)\.[a-z]*[[:space:]]*=.*/\1/p' "$root/vrt.conf"
        } | sort -u
}

_vrt_reply() {
        local IFS=$'\n'
        # One word a line: names never hold blanks, lists are space-separated.
        COMPREPLY=($(compgen -W "${1// /$'\n'}" -- "$cur"))
}

_vrt() {
        local cur prev words cword
        if declare -F _init_completion >/dev/null; then
                _init_completion -n = || return
        else
                cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
                words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
        fi
        local _vrt_cmd=${words[0]}
        local commands="list status stats top start stop spool autostart create init destroy cleanup migrate export import backup restore image snapshot check showcmd qmp agent console"

        # The command: the first word that is not a global option.
        local i cmd= sub= ci=0 si=0
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                --root) ((i++)) ;;
                -*) ;;
                *) if [ -z "$cmd" ]; then cmd=${words[i]} ci=$i
                   elif [ "$cmd" = image ] && [ -z "$sub" ]; then sub=${words[i]}
                   elif [ "$cmd" = snapshot ] && [ -z "$sub" ]; then sub=${words[i]} si=$i; fi ;;
                esac
        done

        case $prev in
        --root|--iso) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); [ "$prev" = --root ] && COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --image) _vrt_reply "$(_vrt_files images .qcow2)"; return ;;
        --size) [ "$cmd" = image ] && return; _vrt_reply "$(_vrt_sizes)"; return ;;
        --init) _vrt_reply "$(_vrt_files init '')"; return ;;
        --disk) _vrt_reply "overlay copy"; return ;;
        --net) _vrt_reply "bridge user none"; return ;;
        --firmware) _vrt_reply "bios uefi"; return ;;
        --sort) _vrt_reply "cpu mem disk net name"; return ;;
        --name|--comment|--bridge|--interval|--mac|--wait|--timeout|--rescan|--disk-size|--memory|--cpus) return ;;
        esac

        if [ -z "$cmd" ]; then
                if [[ $cur == -* ]]; then _vrt_reply "--root --json --help --version"
                else _vrt_reply "$commands"; fi
                return
        fi

        local opts= words_=
        case $cmd in
        list) opts="--all --json" ;;
        status) opts="--json" words_=$(_vrt_vms "") ;;
        stats) opts="--interval --json --prometheus" words_=$(_vrt_vms running) ;;
        top) opts="--interval --sort" ;;
        start) opts="--wait" words_=$(_vrt_vms stopped) ;;
        stop) opts="--timeout --force --wait" words_=$(_vrt_vms running) ;;
        migrate)
                opts="--timeout --bandwidth --downtime"
                if [ $((cword - ci)) = 1 ]; then words_=$(_vrt_vms running)
                elif [ $((cword - ci)) = 2 ]; then words_=$(ls "${VRT_ROOT:-/var/lib/vrt}/hosts" 2>/dev/null); fi ;;
        console) [ $((cword - ci)) = 1 ] && words_=$(_vrt_vms running) ;;
        qmp)
                if [ $((cword - ci)) = 1 ]; then words_=$(_vrt_vms running)
                elif [ $((cword - ci)) = 2 ]; then
                        words_="query-status query-block query-cpus-fast query-name query-version system_powerdown system_reset stop cont quit"
                fi ;;
        agent)
                if [ $((cword - ci)) = 1 ]; then words_=$(_vrt_vms running)
                elif [ $((cword - ci)) = 2 ]; then
                        words_="guest-info guest-ping guest-network-get-interfaces guest-get-osinfo guest-get-host-name guest-get-time guest-shutdown"
                fi ;;
        showcmd) [ $((cword - ci)) = 1 ] && words_=$(_vrt_vms "") ;;
        destroy) opts="--force" words_=$(_vrt_vms "") ;;
        init) opts="--reset --start" words_=$(_vrt_vms "init-failed|init-pending") ;;
        spool) opts="--watch --rescan --wait" words_="inst destroy stop start" ;;
        autostart) opts="--wait" ;;
        cleanup|check) ;;
        export)
                opts="--with-template"
                if [[ $cur == -* ]]; then :
                elif [ $((cword - ci)) = 1 ]; then words_=$(_vrt_vms "stopped|running|init-failed")
                else compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return; fi ;;
        backup)
                opts="--incremental --speed --json"
                [ "$prev" = --speed ] && return
                if [[ $cur == -* ]]; then :
                elif [ $((cword - ci)) = 1 ]; then words_=$(_vrt_vms "stopped|running")
                else compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")); return; fi ;;
        restore)
                opts="--point --json"
                [ "$prev" = --point ] && return
                if [[ $cur != -* ]]; then compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return; fi ;;
        import)
                opts="--name"
                if [[ $cur != -* ]]; then compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")); return; fi ;;
        create)
                opts="--name --image --size --comment --disk --net --bridge --mac --init --firmware --start"
                words_=$(_vrt_files inst .properties)
                if [[ $cur == */* || $cur == *.properties ]]; then
                        compopt -o filenames 2>/dev/null
                        COMPREPLY=($(compgen -f -- "$cur"))
                        return
                fi ;;
        snapshot)
                case $sub in
                "") if [[ $cur == -* ]]; then _vrt_reply "--json --quiesce"; else _vrt_reply "list revert delete $(_vrt_vms "")"; fi
                    return ;;
                list) opts="--json"; [ $((cword - si)) = 1 ] && words_=$(_vrt_vms "") ;;
                revert|delete) [ $((cword - si)) = 1 ] && words_=$(_vrt_vms stopped) ;;
                esac ;;
        image)
                if [ -z "$sub" ]; then _vrt_reply "info overlay list protect install"; return; fi
                case $sub in
                info) opts="--json" words_=$(_vrt_files images .qcow2) ;;
                overlay) opts="--size"; compopt -o filenames 2>/dev/null; words_=$(compgen -f -- "$cur") ;;
                list) opts="--json" ;;
                protect) words_=$(_vrt_files images .qcow2) ;;
                install) opts="--iso --disk-size --memory --cpus --firmware --timeout" ;;
                esac ;;
        esac
        if [[ $cur == -* ]]; then _vrt_reply "$opts"; else _vrt_reply "$words_"; fi
}
complete -F _vrt vrt

_vrt_launch() {
        local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
        case $prev in
        --root) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --seed-image|--init-log) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --shutdown-timeout|--run-timeout) return ;;
        esac
        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "--root --shutdown-timeout --seed-image --init-log --run-timeout --help --version" -- "$cur"))
        else
                local _vrt_cmd=vrt
                COMPREPLY=($(compgen -W "$(_vrt_vms "stopped|init-failed|init-pending")" -- "$cur"))
        fi
}
complete -F _vrt_launch vrt-launch
