# The fuzz targets: one per tests/fuzz/fuzz_NAME.cpp (adding a target is adding that file and its
# seed corpus tests/fuzz/corpus/NAME/). Used by the libFuzzer build (INTERP_FUZZ) and fuzz-replay.
file(GLOB _interp_fuzz_files CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/fuzz_*.cpp)
set(INTERP_FUZZ_TARGETS)
foreach(f ${_interp_fuzz_files})
  get_filename_component(n ${f} NAME_WE)
  string(REGEX REPLACE "^fuzz_" "" n ${n})
  list(APPEND INTERP_FUZZ_TARGETS ${n})
endforeach()
list(SORT INTERP_FUZZ_TARGETS)
