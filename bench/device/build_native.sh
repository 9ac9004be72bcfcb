# Build the painters' native parts against the machine's torch (run after setup_env.sh):
# custom_rasterizer (2.1's source; serves both painters) into /tmp/site, 2.1's mesh_inpaint_processor and
# 2.0's compiled mesh_processor in place. Writes timings to /tmp/native.log.
H=$PWD/.hy
start=$(date +%s)
( cd $H/h21/hy3dpaint/DifferentiableRenderer && c++ -O3 -Wall -shared -std=c++11 -fPIC $(python3 -m pybind11 --includes) \
    mesh_inpaint_processor.cpp -o mesh_inpaint_processor$(python3 -c 'import sysconfig;print(sysconfig.get_config_var("EXT_SUFFIX"))') \
    && echo "inpaint ok $(( $(date +%s) - start ))s" ) >>/tmp/native.log 2>&1 &
( cd $H/h2/hy3dgen/texgen/differentiable_renderer && c++ -O3 -std=c++14 -fPIC -Wall -shared -pthread $(python3 -m pybind11 --includes) \
    mesh_processor.cpp -o mesh_processor$(python3 -c 'import sysconfig;print(sysconfig.get_config_var("EXT_SUFFIX"))') \
    && echo "mesh_processor ok $(( $(date +%s) - start ))s" ) >>/tmp/native.log 2>&1 &
( MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 -m pip install --no-build-isolation --no-deps --no-index --target /tmp/site \
    $H/h21/hy3dpaint/custom_rasterizer >/tmp/cr.log 2>&1 && echo "rasterizer ok $(( $(date +%s) - start ))s" >>/tmp/native.log \
    || { echo "rasterizer FAILED"; tail -30 /tmp/cr.log; } >>/tmp/native.log ) &
wait
cat /tmp/native.log
