# The device tool ships the session's own checkout (/work/main), not this worktree: copy the worktree's code
# and the carried folders into /work/main/.i9 (ignored through .git/info/exclude) and carry ".i9".
set -e
dst=/work/main/.i9/wt
rm -rf $dst && mkdir -p $dst
cd /work/wt/i9-bench
tar --exclude=.git --exclude=__pycache__ --exclude='*.pyc' --exclude=bench/out -cf - . | tar -xf - -C $dst
du -sh $dst
