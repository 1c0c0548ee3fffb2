# Script run by CTest: configures, builds and runs tests/consumer/app in MODE
# find_package (after installing this project into WORK_DIR/prefix) or add_subdirectory.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "command failed (${result}): ${ARGN}\n${output}")
  endif()
endfunction()

set(app_source ${SOURCE_DIR}/tests/consumer/app)
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${WORK_DIR}/prefix --component Unspecified)
  run(${CMAKE_COMMAND} -S ${app_source} -B ${WORK_DIR}/build -DCMAKE_BUILD_TYPE=Release
      -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DBLIP_APP_MODE=find_package)
else()
  run(${CMAKE_COMMAND} -S ${app_source} -B ${WORK_DIR}/build -DCMAKE_BUILD_TYPE=Release
      -DBLIP_APP_MODE=add_subdirectory -DBLIP_SOURCE=${SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)
run(${WORK_DIR}/build/blip_consumer_app)
